"""`sendfleet readiness`: mail through every sending IP, checked where it arrives.

    sendfleet readiness -i INVENTORY [--format table|json] [--host H]... [--domain D]...
                        [--source ADDR] [--port 25] [--to 'readiness+{tag}@gmail.test'] [--from-local readiness]
                        [--collect-from DIR | --imap imaps://USER@HOST/FOLDER] [--wait 90] [--max-per-ip 12]

For every sender host and every sender domain of a pool with IPs on that host, tagged messages are submitted
to the host (from --source, an address of the app networks) until every IP of the pool has been seen at the
receiving MX. Each message is then verified independently of the code that configured the fleet: connecting
IP in the pool, FCrDNS and HELO = PTR, DKIM (dkimpy, key from DNS) aligned with From, SPF pass (pyspf),
DMARC pass, TLS. DNS answers come from the inventory's `dns_resolver`.

Defaults from the inventory: --source = `readiness_source_address` (lab: the first app address),
--to = `readiness_recipient` (lab: readiness+{tag}@<first recipient domain>), collection = the lab's sink
when the inventory is the lab's, else --imap URL (a seed mailbox read over IMAP, password in
SENDFLEET_IMAP_PASSWORD) or --collect-from DIR (the mailbox synchronised to a Maildir or a folder of .eml
files) is required: see tests/e2e/README.md.

Exit codes: 0 every IP and domain passes; 1 something failed (the report says which IP/domain and why);
2 bad input; 3 could not check (no message arrived from some host/domain, or it could not be reached).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sendfleet.core.inventory import Inventory
from sendfleet.core.readiness import CHECKS, Report, plan_routes
from sendfleet.errors import CannotCheckError, UsageError
from sendfleet.inventory_io import add_inventory_options, inventory_from_args


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "readiness",
        help="send tagged mail through every sending IP and verify what the receiving MX saw",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: sendfleet readiness -i inventories/prod --imap imaps://seed@imap.example.net/INBOX",
    )
    add_inventory_options(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--host", action="append", default=[], metavar="H", help="only this sender host")
    parser.add_argument("--domain", action="append", default=[], metavar="D", help="only this sender domain")
    parser.add_argument("--source", metavar="ADDR", help="local address to submit from (app networks)")
    parser.add_argument("--port", type=int, default=25, help="SMTP port of the sender hosts (25)")
    parser.add_argument("--to", metavar="TEMPLATE", help="recipient; {tag} is replaced by the message's tag")
    parser.add_argument("--from-local", default=None, metavar="LOCAL", help="local part of From (readiness)")
    collect = parser.add_mutually_exclusive_group()
    collect.add_argument("--collect-from", type=Path, metavar="DIR", help="raw messages (Maildir or *.eml)")
    collect.add_argument(
        "--imap", metavar="URL", help="seed mailbox imaps://USER@HOST[:PORT]/FOLDER (password: SENDFLEET_IMAP_PASSWORD)"
    )
    parser.add_argument("--wait", type=float, default=90.0, metavar="S", help="seconds to wait per round")
    parser.add_argument("--max-per-ip", type=int, default=12, metavar="N", help="messages per IP at most")
    parser.set_defaults(func=_run)


def _first(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        return str(value[0]) if value else None
    return None if value in (None, "") else str(value)


def resolve_options(args: argparse.Namespace, inv: Inventory) -> tuple[str, str | None, str, bool]:
    """(recipient template, source address, From local part, use the lab's sink)."""
    gv = inv.vars
    is_lab = bool(gv.get("lab"))
    recipient = args.to or _first(gv.get("readiness_recipient"))
    if recipient is None and is_lab:
        domain = _first(gv.get("lab_recipient_domains"))
        recipient = f"readiness+{{tag}}@{domain}" if domain else None
    if recipient is None:
        raise UsageError("give --to (a recipient whose mailbox you collect), or readiness_recipient in the inventory")
    if "@" not in recipient:
        raise UsageError(f"--to {recipient!r}: not an e-mail address")
    source = args.source or _first(gv.get("readiness_source_address")) or _first(gv.get("lab_app_addresses"))
    from_local = args.from_local or _first(gv.get("readiness_from_local")) or "readiness"
    use_sink = args.collect_from is None and args.imap is None
    if use_sink and not is_lab:
        raise UsageError("give --imap URL or --collect-from DIR (where the seed mailbox is read): this is not the lab")
    return recipient, source, from_local, use_sink


def _run(args: argparse.Namespace) -> int:
    from sendfleet.readiness.collect import Collector, DirectoryCollector, ImapCollector
    from sendfleet.readiness.evidence import DnsView
    from sendfleet.readiness.run import Options, run

    if args.max_per_ip < 1 or args.wait <= 0 or not 1 <= args.port <= 65535:
        raise UsageError("--max-per-ip must be >= 1, --wait > 0 and --port 1-65535")
    inv = inventory_from_args(args)
    for h in args.host:
        if h not in inv.hosts:
            raise UsageError(f"--host {h}: not in the inventory (hosts: {', '.join(inv.hosts)})")
    for d in args.domain:
        if d not in inv.sender_domains:
            raise UsageError(f"--domain {d}: not a sender domain (known: {', '.join(inv.sender_domains)})")
    routes = plan_routes(inv, hosts=args.host, domains=args.domain)
    if not routes:
        raise UsageError(f"{inv.path}: no sender host has a sending IP in the pool of a sender domain")
    recipient, source, from_local, use_sink = resolve_options(args, inv)
    collector: Collector
    fleet_ips = [str(s.ip) for s in inv.sending_ips()]
    if use_sink:
        from sendfleet.lab.collect import LabSinkCollector  # the lab is a test fixture: loaded only for it

        collector = LabSinkCollector()
    elif args.imap:
        collector = ImapCollector(args.imap, fleet_ips)
    else:
        collector = DirectoryCollector(args.collect_from, fleet_ips)
    options = Options(
        recipient=recipient, source=source, port=args.port, from_local=from_local, wait=args.wait,
        cap_per_ip=args.max_per_ip,
    )
    err = Console(stderr=True)
    progress = (lambda msg: err.print(f"[dim]readiness: {msg}[/dim]")) if args.format == "table" else None
    report = run(routes, collector, DnsView(inv.resolver), options, progress)
    if not report.rows:
        raise CannotCheckError("nothing to check")
    if args.format == "json":
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        render_table(report)
    return report.exit_code


_STYLE = {"pass": "green", "fail": "bold red", "unknown": "yellow"}


def _cell(check: Any) -> str:
    if check is None:
        return "-"
    return "[green]ok[/green]" if check.ok else "[bold red]FAIL[/bold red]"


def render_table(report: Report, console: Console | None = None) -> None:
    if console is None:
        width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))
        console = Console(width=width, soft_wrap=False)
    table = Table(title="sendfleet readiness: per sending IP and sender domain")
    for col in ("host", "IP", "pool", "domain", "msgs", *CHECKS, "verdict"):
        table.add_column(col, justify="right" if col == "msgs" else "left", no_wrap=True)
    for r in report.rows:
        table.add_row(
            r.host, r.ip + ("" if r.expected else " (!)"), r.pool, r.domain, str(r.messages),
            *(_cell(r.checks.get(c)) for c in CHECKS),
            f"[{_STYLE[r.verdict]}]{r.verdict}[/{_STYLE[r.verdict]}]",
        )
    console.print(table)

    summary = Table(title="per IP / per domain")
    summary.add_column("what", no_wrap=True)
    summary.add_column("verdict", no_wrap=True)
    summary.add_column("rows", justify="right")
    for kind, items in (("IP", report.by_ip), ("domain", report.by_domain)):
        for s in items:
            summary.add_row(f"{kind} {s.key}", f"[{_STYLE[s.verdict]}]{s.verdict}[/{_STYLE[s.verdict]}]",
                            str(s.rows))
    console.print(summary)

    problems = [(r, p) for r in report.rows for p in r.problems]
    for r, p in problems:
        console.print(f"[{_STYLE[r.verdict]}]{r.verdict}[/{_STYLE[r.verdict]}] {r.host} {r.ip} {r.domain}: {p}",
                      highlight=False, soft_wrap=True)
    if report.missing:
        console.print(f"[yellow]accepted but never arrived:[/yellow] {', '.join(report.missing)}", soft_wrap=True)
    console.print(
        f"{report.sent} submitted, {report.accepted} accepted, {report.arrived} arrived; "
        f"verdict: {({0: 'pass', 1: 'FAIL', 3: 'could not check'})[report.exit_code]}",
        highlight=False,
    )
