"""sendfleet: stand up and keep healthy a fleet of dedicated outbound mail senders.

The path of an IP, from a purchased range to a sender (ansible-playbook site.yml does the provisioning):

  sendfleet vet 198.51.100.0/26 --zones public --admit inventories/prod --pool transactional
  sendfleet pool assign -i inventories/prod --pool transactional --per-host 2
  sendfleet inventory check -i inventories/prod
  ansible-playbook -i inventories/prod site.yml
  sendfleet readiness -i inventories/prod --imap imaps://seed@imap.example.net/INBOX

Every command prints a table for people and JSON with --format json. Exit codes: 0 ok, 1 checked and found
problems, 2 bad input or usage (one line, nothing written), 3 could not check. `sendfleet COMMAND --help`
describes each command with an example.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sendfleet import __version__
from sendfleet.errors import EXIT_USAGE, SendfleetError

# Each noun lives in sendfleet.commands.<noun> and exposes register(subparsers), which adds its parser and sets
# `func` (a callable taking the parsed namespace and returning an exit code). In the order `--help` lists them.
COMMAND_MODULES = ("lab", "vet", "inventory", "dns", "pool", "readiness", "warmup", "report")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"sendfleet: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sendfleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
