"""Progress for long work: a bar with percent and ETA on stderr (tqdm).

Library functions that can run for more than a couple of seconds take a
``progress=`` hook: ``None`` (nothing), or a callable
``progress(task, done, total, note="")`` that they call as the work advances
(``done`` of ``total`` units of ``task``; ``note`` names the current step).
:class:`Progress` is such a hook that draws one tqdm bar per task on stderr,
only when stderr is a terminal unless told otherwise.  Nothing is ever
written to stdout.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

__all__ = ["Progress", "as_hook"]

Hook = Callable[..., None]


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A ``progress=`` hook that draws a tqdm bar per task on ``stream`` (stderr).

    Parameters
    ----------
    enabled : bool or None
        ``None``: only when ``stream`` is a terminal.
    stream : file, optional
        Where bars go (default ``sys.stderr``).
    delay : float
        Seconds a task must run before its bar appears (short work stays silent).
    """

    def __init__(self, enabled: bool | None = None, *, stream=None, delay: float = 1.0):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else bool(enabled)
        self.delay = delay
        self._bars: dict = {}

    def __call__(self, task: str, done: float, total: float, note: str = "") -> None:
        if not self.enabled:
            return
        bar = self._bars.get(task)
        if bar is None:
            from tqdm import tqdm  # only when a bar is drawn

            bar = tqdm(
                total=total,
                desc=f"ptebatch {task}",
                file=self.stream,
                delay=self.delay,
                leave=False,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                "[{elapsed}<{remaining}] {postfix}",
            )
            self._bars[task] = bar
        bar.total = total
        bar.n = done
        bar.set_postfix_str(note, refresh=False)
        bar.refresh()
        if done >= total:
            self._close(task)

    def _close(self, task: str) -> None:
        bar = self._bars.pop(task, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        """Remove every bar still shown (call when the command ends, even on error)."""
        for task in list(self._bars):
            self._close(task)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def as_hook(progress) -> Hook:
    """A library function's ``progress=`` argument as a four-argument hook.

    ``None`` does nothing; a callable of one argument (the older hooks of
    :func:`ptebatch.generate` and :func:`ptebatch.experiment`) gets the step's
    name.
    """
    if progress is None:
        return lambda task, done, total, note="": None
    if not callable(progress):
        raise TypeError(f"progress: expected a callable or None, got {type(progress).__name__}")
    try:
        params = inspect.signature(progress).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        one_arg = len(positional) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):
        one_arg = False
    if one_arg:
        return lambda task, done, total, note="": progress(note or task)
    return progress
