"""The command registry and the printing helpers every command module shares.

Every command is registered in ``COMMANDS`` by the ``@command`` decorator
with a function that adds its arguments and one that runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from ..progress import Progress

COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}


def command(name: str, help: str):
    """Register ``configure(parser)``; the decorated function is the runner."""

    def deco(configure):
        def register(run):
            COMMANDS[name] = (help, configure, run)
            return run

        return register

    return deco


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"ptebatch: error: {message}\n")
        raise SystemExit(2)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    for r in rows:
        lines.append(
            "  ".join(
                fmt(r.get(c)).rjust(widths[c])
                if isinstance(r.get(c), (int, float))
                else fmt(r.get(c)).ljust(widths[c])
                for c in cols
            )
        )
    return "\n".join(lines)


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def int_arg(field: str):
    """An argparse ``type``: an integer in any base (``0x...``); the error names ``field``."""

    def parse(text: str) -> int:
        try:
            return int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{field}: {text!r} is not an integer (use 0x... for hex)"
            ) from None

    return parse


def make_progress(a) -> Progress:
    """The command's progress bars: ``--progress``/``--no-progress`` (or ``--quiet``); by
    default only when stderr is a terminal."""
    enabled = getattr(a, "progress", None)
    if getattr(a, "quiet", False):
        enabled = False
    # asked for explicitly: show at once; automatic: only work that lasts
    return Progress(enabled, delay=0.0 if enabled else 1.0)
