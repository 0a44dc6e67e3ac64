"""The command registry and the printing helpers every command module shares.

Every command is registered in ``COMMANDS`` by the ``@command`` decorator
with a function that adds its arguments and one that runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
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


def real_arg(field: str, lo: float, hi: float, what: str):
    """An argparse ``type``: a finite number in ``(lo, hi]`` (not nan, not inf); ``what``
    says what the number is, for the error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and lo < value <= hi):
            raise argparse.ArgumentTypeError(
                f"{field}: must be {what}, above {lo:,} and at most {hi:,}; got {text!r}"
            )
        return value

    return parse


# Options whose value may be negative: argparse takes "-0x1ff000" for an option, so
# "--move-by -0x1ff000" is joined into "--move-by=-0x1ff000" before parsing.
SIGNED_OPTIONS = ("--move-by",)
_SIGNED_NUMBER = re.compile(r"-(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)")


def join_signed_values(argv: list[str]) -> list[str]:
    """``argv`` with each ``OPTION -NUMBER`` of :data:`SIGNED_OPTIONS` written
    ``OPTION=-NUMBER``, which argparse reads as the option's value (not after ``--``)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return out + argv[i:]
        if a in SIGNED_OPTIONS and i + 1 < len(argv) and _SIGNED_NUMBER.fullmatch(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def make_progress(a) -> Progress:
    """The command's progress bars: ``--progress``/``--no-progress`` (or ``--quiet``); by
    default only when stderr is a terminal."""
    enabled = getattr(a, "progress", None)
    if getattr(a, "quiet", False):
        enabled = False
    # asked for explicitly: show at once; automatic: only work that lasts
    return Progress(enabled, delay=0.0 if enabled else 1.0)
