"""`sendfleet <noun> <verb>`: the command line.

Each noun lives in `sendfleet.commands.<noun>` and exposes `register(subparsers)`, which adds
its parser and sets `func` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sendfleet import __version__
from sendfleet.errors import EXIT_USAGE, SendfleetError

COMMAND_MODULES = ("lab", "vet", "inventory", "dns", "pool", "readiness", "warmup", "report")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"sendfleet: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sendfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sendfleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"sendfleet.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except SendfleetError as err:
        sys.stderr.write(f"sendfleet: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("sendfleet: interrupted\n")
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
