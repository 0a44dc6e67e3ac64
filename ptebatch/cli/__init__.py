"""The ``ptebatch`` command line.

The CLI imports the library; the library never imports the CLI.  Each group
of commands is one module here (:mod:`.walks`, :mod:`.workloads`,
:mod:`.live`, :mod:`.bench`) that registers its commands with ``@command``
when imported.  A bad input prints one line, ``ptebatch: error: ...``, and
exits 2.
"""

from __future__ import annotations

import argparse
import sys

# Each import registers its commands; the order is the order of `ptebatch --help`.
# isort: off
from . import walks, shards, live, workloads, cost, diff, bench  # noqa: F401

# isort: on
from ._registry import COMMANDS, _Parser, join_signed_values

__all__ = ["main", "build_parser", "COMMANDS"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ptebatch`` parser with every registered command."""
    parser = _Parser(
        prog="ptebatch", description="Linux folio_pte_batch rules over NumPy page tables."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_, configure, _run) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        configure(sp)
        sp.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="progress bars on stderr (default: when stderr is a terminal and the work "
            "lasts more than a second); nothing on stdout changes",
        )
    return parser


def main(argv=None) -> int:
    """Run ``ptebatch`` with ``argv`` (default: the process's arguments); returns the exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(join_signed_values(argv))
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(COMMANDS[args.command][2](args) or 0)
    except BrokenPipeError:
        # stdout closed early (| head): not an error of ours
        sys.stderr.close()
        return 0
    except ImportError as exc:
        sys.stderr.write(f"ptebatch: error: {exc}\n")
        return 2
    except (ValueError, TypeError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"{exc.filename}: {msg}"
        sys.stderr.write(f"ptebatch: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("ptebatch: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
