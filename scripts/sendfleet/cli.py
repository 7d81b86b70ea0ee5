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

# Each noun lives in sendfleet.commands.<noun> and exposes register(subparsers), which adds its parser (with the
# help line below) and sets `func` (a callable taking the parsed namespace and returning an exit code). In the
# order `--help` lists them. A run imports only the module of its command (start-up time): `--help` lists the
# others from this table, which tests/unit/test_cli_commands.py holds equal to what each module registers.
COMMANDS = {
    "lab": "the local lab: Debian hosts, DNS, blocklists and a sink MX",
    "vet": "vet IPs, ranges and sender domains against blocklists; admit clean IPs into a pool",
    "inventory": "check an inventory against sendfleet's rules",
    "dns": "plan, publish (RFC 2136) and check the fleet's DNS; the FCrDNS gate",
    "pool": "vetted IPs per pool, and their assignment to sender hosts",
    "readiness": "send tagged mail through every sending IP and verify what the receiving MX saw",
    "warmup": "IP warm-up: each IP's stage, weight and limits",
    "report": "deliveries per sending IP and provider, with a PNG chart",
    "status": "the fleet now: per host and IP the state, last hour, queue and firing alerts",
    "suppression": "the suppression list on the feedback host: list, add, remove, import, export",
    "shaping": "per (IP, provider class): limits, throttles and suspensions; suspend or resume a path",
}
COMMAND_MODULES = tuple(COMMANDS)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"sendfleet: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command tree; with `only`, that command's module alone is imported and registered, every other
    command is a placeholder that still shows in `--help` with its help line."""
    parser = _Parser(prog="sendfleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sendfleet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, help_line in COMMANDS.items():
        if only is None or name == only:
            module = importlib.import_module(f"sendfleet.commands.{name}")
            module.register(sub)
        else:
            sub.add_parser(name, help=help_line)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named by argv (its first word that is not an option), if it is one of ours."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command_of(words) or "")
    args = parser.parse_args(words)
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
