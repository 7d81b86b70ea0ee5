"""`sendfleet suppression list|add|remove|import|export|check -i INVENTORY`: the fleet's suppression list, kept on
the feedback host (the first host of the inventory group `feedback`) in PostgreSQL and read by every sender's
Postfix at RCPT. Each verb runs `python -m sendfleet.feedback suppression ...` there over SSH (as the database's
owner: `runuser` as root, else `sudo -n -u sendfleet`) and prints a table or, with `--format json`, JSON.

`import FILE` takes CSV or JSON (by the file's extension, or --input-format): sendfleet's own export, or the CSV
another ESP exports (columns found case-insensitively: email/address/email_address/recipient, reason/type/status,
created/created_at/date). Every bad row is one line naming it, and nothing is imported while any row is bad unless
--skip-bad. `export` writes CSV or JSON to --output (atomically) or stdout."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sendfleet.errors import EXIT_OK, EXIT_PROBLEMS, UsageError
from sendfleet.feedback import client
from sendfleet.inventory_io import add_inventory_options

HELP = "the suppression list on the feedback host: list, add, remove, import, export"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "suppression", help=HELP,
        description="The fleet's suppression list (hard bounces, complaints, repeated soft bounces, operator "
        "entries) on the feedback host; every sender refuses these recipients at submission.",
        epilog="example: sendfleet suppression import -i inventories/prod old-esp-suppressions.csv")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    def common(p: argparse.ArgumentParser, *, fmt: bool = True) -> None:
        add_inventory_options(p)
        client.add_options(p)
        if fmt:
            p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=_run)

    p = actions.add_parser("list", help="active entries", description="The active suppression entries (--all: "
                           "expired ones too).", epilog="example: sendfleet suppression list -i inv")
    p.add_argument("--all", action="store_true", help="expired entries too")
    common(p)
    p = actions.add_parser("add", help="suppress an address (reason manual)",
                           description="Suppress an address by hand (reason manual, source operator); it replaces "
                           "an entry the address already has.",
                           epilog="example: sendfleet suppression add -i inv someone@example.net --detail 'asked'")
    p.add_argument("address")
    p.add_argument("--detail", default="", help="why (kept with the entry)")
    p.add_argument("--expires-days", type=int, help="lift it after N days (default: never)")
    common(p)
    p = actions.add_parser("remove", help="lift the suppression of an address",
                           description="Remove an address from the suppression list (exit 1: it was not on it).",
                           epilog="example: sendfleet suppression remove -i inv someone@example.net")
    p.add_argument("address")
    common(p)
    p = actions.add_parser("check", help="what a sender answers for an address at RCPT",
                           description="The reply the senders' suppression map gives for an address, by the very "
                           "query they run.",
                           epilog="example: sendfleet suppression check -i inv someone@example.net")
    p.add_argument("address")
    common(p)
    p = actions.add_parser("import", help="add the entries of a CSV or JSON file",
                           description="Add the entries of a CSV or JSON file in one transaction: sendfleet's "
                           "export or another ESP's CSV. Bad rows are listed, one line each; nothing is imported "
                           "while any row is bad unless --skip-bad.",
                           epilog="example: sendfleet suppression import -i inv export.csv --skip-bad")
    p.add_argument("file", type=Path)
    p.add_argument("--input-format", choices=("csv", "json"), help="default: by the file's extension (else csv)")
    p.add_argument("--skip-bad", action="store_true", help="import the good rows even if some are bad")
    p.add_argument("--replace", action="store_true",
                   help="replace the entries of addresses already suppressed (default: keep them)")
    common(p)
    p = actions.add_parser("export", help="every active entry as CSV or JSON",
                           description="Every active entry (--all: expired ones too) as CSV or JSON, to --output "
                           "(written atomically) or stdout.",
                           epilog="example: sendfleet suppression export -i inv --output list.csv")
    p.add_argument("--output", type=Path, help="write to this file (default: stdout)")
    p.add_argument("--format", choices=("csv", "json"), help="default: by --output's extension (else csv)")
    p.add_argument("--all", action="store_true", help="expired entries too")
    common(p, fmt=False)


def _inventory(args: argparse.Namespace) -> Any:
    if args.local and not args.inventory:
        return None
    from sendfleet.inventory_io import inventory_from_args

    return inventory_from_args(args)


def _import(args: argparse.Namespace) -> tuple[list[str], bytes, list[str]]:
    """Check the file here (each bad row one line on stderr); the words and the canonical JSON to send."""
    from sendfleet.feedback import transfer

    fmt = args.input_format or ("json" if args.file.suffix.lower() == ".json" else "csv")
    try:
        text = args.file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{args.file}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{args.file}: cannot read: {err}") from None
    try:
        entries, bad = transfer.parse(text, fmt, source=f"import:{args.file.name}", now=datetime.now(UTC))
    except UsageError as err:
        raise UsageError(f"{args.file}: {err}") from None
    for line in bad:
        sys.stderr.write(f"sendfleet: {args.file}: {line}\n")
    if bad and not args.skip_bad:
        raise UsageError(f"{args.file}: {len(bad)} bad row(s), nothing imported (--skip-bad imports the others)")
    words = ["suppression", "import", "--input-format", "json", "--name", args.file.name, "--format", "json"]
    if args.replace:
        words.append("--replace")
    return words, transfer.to_json(entries).encode(), bad


def _run(args: argparse.Namespace) -> int:
    inv = _inventory(args)
    if args.action == "export":
        fmt = args.format or ("json" if args.output and args.output.suffix.lower() == ".json" else "csv")
        if args.output is not None and not args.output.parent.is_dir():
            raise UsageError(f"--output {args.output}: no such directory {args.output.parent}")
        words = ["suppression", "export", "--output-format", fmt] + (["--all"] if args.all else [])
        text = client.run(args, inv, words, parse_json=False)
        if args.output is None:
            sys.stdout.write(text)
        else:
            from sendfleet import atomicfile

            atomicfile.write_atomic(args.output, text, mode=0o600)
            n = max(0, len(text.splitlines()) - 1) if fmt == "csv" else len(json.loads(text))
            sys.stderr.write(f"sendfleet: {n} entries written to {args.output}\n")
        return EXIT_OK
    stdin = b""
    bad: list[str] = []
    if args.action == "import":
        words, stdin, bad = _import(args)
    else:
        words = ["suppression", args.action, "--format", "json"]
        if args.action in ("add", "remove", "check"):
            words.append(args.address)
        if args.action == "add":
            words += ["--detail", args.detail, "--source", "operator"]
            if args.expires_days is not None:
                words += ["--expires-days", str(args.expires_days)]
        if args.action == "list" and args.all:
            words.append("--all")
    data = client.run(args, inv, words, stdin=stdin)
    if args.format == "json":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return EXIT_PROBLEMS if args.action == "remove" and not data.get("removed") else EXIT_OK
    if args.action == "list":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"suppression list ({len(data)} entries)")
        for col in ("address", "reason", "created", "expires", "source", "detail"):
            table.add_column(col)
        for e in data:
            table.add_row(e["address"], e["reason"], e["created"], e["expires"] or "never", e["source"],
                          e["detail"][:80])
        (Console() if sys.stdout.isatty() else Console(width=200)).print(table)
    elif args.action == "add":
        sys.stdout.write(f"{data['added']['address']} suppressed\n")
    elif args.action == "remove":
        sys.stdout.write(f"{args.address} {'removed' if data['removed'] else 'was not suppressed'}\n")
        return EXIT_OK if data["removed"] else EXIT_PROBLEMS
    elif args.action == "check":
        sys.stdout.write((data["reply"] or f"{args.address}: not suppressed") + "\n")
    elif args.action == "import":
        skipped = f", {len(bad)} bad rows skipped" if bad else ""
        sys.stdout.write(f"{data['imported']} entries imported{skipped}\n")
    return EXIT_OK
