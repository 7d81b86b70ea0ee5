"""`sendfleet report -i INVENTORY [--hours N] [--png FILE] [--format table|json]`: deliveries per sending IP
and provider class (sent / deferred / bounced) over the last N hours, the top deferral and bounce
reasons, and each IP's monitor status (in service / drained), as counted on every sender by the
dnsbl_monitor role (its delivery timer reads Postfix's log). The provider of a count is the class of the
transport that carried the mail (`other`: the IP's own transport); a count a sender filed under anything else
(a recipient domain, in a state file written before the labels were classes) shows as `other`. `--png` draws a
chart of the window.

`sendfleet report feedback -i INVENTORY [--days N]` and `sendfleet report dmarc ...` read the feedback host
instead (sendfleet.commands.feedback_report): bounce and complaint rates per sender domain, IP and provider class,
and the DMARC aggregate reports received."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sendfleet.core import maillog
from sendfleet.errors import EXIT_OK, EXIT_PROBLEMS, CannotCheckError, UsageError
from sendfleet.inventory_io import add_inventory_options

if TYPE_CHECKING:
    from sendfleet.core.inventory import Inventory

STATE_DIR = "/var/lib/sendfleet/monitor"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "report", help="deliveries per sending IP and provider, with a PNG chart",
        description="Deliveries (sent, deferred, bounced) per sending IP and provider class over a window,\n"
        "read from the monitor on every sender, with the top reasons; optionally a PNG chart.\n\n"
        "report feedback: bounce and complaint rates per sender domain, IP and provider class over --days\n"
        "(the feedback host's counts against the senders' deliveries). report dmarc: the DMARC aggregate reports\n"
        "received, per domain and source IP.",
        epilog="example: sendfleet report -i inventories/prod --hours 24 --png deliveries.png\n"
        "example: sendfleet report feedback -i inventories/prod --days 7",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("deliveries", "feedback", "dmarc"), default="deliveries",
                        help="deliveries (default; from the senders), feedback (bounce and complaint rates, from the "
                        "feedback host and the senders) or dmarc (DMARC aggregate reports)")
    add_inventory_options(parser)
    parser.add_argument("--days", type=int, default=7, help="feedback, dmarc: window in days, up to now (default 7)")
    parser.add_argument("--hours", type=int, default=24, help="window in hours, up to now (default 24)")
    parser.add_argument("--png", type=Path, help="write a chart of the window to this PNG file")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--group", default="senders", help="inventory group of the senders (default senders)")
    parser.add_argument("--from-dir", type=Path,
                        help="read DIR/<host>/delivery.json and state.json instead of asking the hosts by SSH")
    parser.add_argument("--state-dir", default=STATE_DIR, help=f"monitor state directory on the hosts ({STATE_DIR})")
    from sendfleet.feedback import client

    client.add_options(parser)
    parser.set_defaults(func=_run)


def _fetch(args: argparse.Namespace, inv: Inventory) -> dict[str, dict[str, Any]]:
    from sendfleet.monitor import remote

    hosts = inv.group(args.group)
    if not hosts:
        raise UsageError(f"{inv.path}: no host in group {args.group!r}")
    out: dict[str, dict[str, Any]] = {}
    for host in hosts:
        if args.from_dir is not None:
            files = {}
            for name in ("delivery", "state"):
                path = args.from_dir / host.name / f"{name}.json"
                files[name] = json.loads(path.read_text()) if path.exists() else None
        else:
            try:
                files = {
                    name: remote.read_json(host.name, host.vars, f"{args.state_dir}/{name}.json")
                    for name in ("delivery", "state")
                }
            except CannotCheckError as err:
                files = {"error": str(err)}
        out[host.name] = files
    if all("error" in f for f in out.values()):
        raise CannotCheckError("no sender could be read: " + "; ".join(str(f["error"]) for f in out.values()))
    return out


def build_report(
    data: dict[str, dict[str, Any]], hours: int, now: float, classes: Collection[str]
) -> dict[str, Any]:
    """`classes`: the inventory's provider classes (a count labelled otherwise shows as `other`)."""
    since = maillog.hour_key(now - (hours - 1) * 3600)
    end = datetime.fromtimestamp(now, UTC)
    window = [(end - timedelta(hours=h)).strftime("%Y-%m-%dT%H") for h in range(hours - 1, -1, -1)]
    rows: list[dict[str, Any]] = []
    reasons: list[dict[str, Any]] = []
    per_hour: dict[str, dict[str, int]] = {}
    ips: list[dict[str, Any]] = []
    missing: list[str] = []
    unreachable: dict[str, str] = {}
    for host, files in sorted(data.items()):
        if "error" in files:
            unreachable[host] = str(files["error"])
            continue
        delivery = files.get("delivery") or {}
        state = files.get("state") or {}
        if not delivery:
            missing.append(host)
        hours_data = {h: r for h, r in (delivery.get("hours") or {}).items() if h >= since}
        summary = maillog.summarise(hours_data, since, delivery.get("reasons") or [], classes)
        rows += [{"host": host, **r} for r in summary.rows]
        reasons += [{"host": host, **r} for r in summary.reasons]
        for h, rs in hours_data.items():
            cell = per_hour.setdefault(h, {})
            for r in rs:
                cell[str(r["status"])] = cell.get(str(r["status"]), 0) + int(r["count"])
        for ip, s in sorted((state.get("ips") or {}).items()):
            verdict = ((state.get("verdicts") or {}).get(ip) or {}).get("verdict")
            ips.append({"host": host, "ip": ip, "pool": s.get("pool"), "status": s.get("status"), "verdict": verdict,
                        "since": s.get("since")})
    reasons.sort(key=lambda r: (-int(r["count"]), str(r["reason"])))
    return {
        "window": {"hours": hours, "from": since, "generated": datetime.fromtimestamp(now, UTC).isoformat()},
        "rows": rows,
        "per_hour": {h: per_hour.get(h, {}) for h in window},
        "reasons": reasons[:20],
        "ips": ips,
        "hosts_without_data": missing,
        "hosts_unreachable": unreachable,
    }


def _per_ip(report: dict[str, Any]) -> list[tuple[str, dict[str, int]]]:
    acc: dict[tuple[str, str], dict[str, int]] = {}
    for r in report["rows"]:
        cell = acc.setdefault((r["host"], r["ip"]), dict.fromkeys(maillog.STATUSES, 0))
        for st in maillog.STATUSES:
            cell[st] += int(r[st])
    return [(f"{host} {ip}", c) for (host, ip), c in sorted(acc.items())]


def _run(args: argparse.Namespace) -> int:
    if args.what != "deliveries":
        from sendfleet.commands import feedback_report

        return feedback_report.run(args, _fetch, build_report)
    if not 1 <= args.hours <= 24 * 31:
        raise UsageError(f"--hours {args.hours}: expected 1..744")
    if args.png is not None and not args.png.parent.is_dir():
        raise UsageError(f"--png {args.png}: no such directory {args.png.parent}")
    from sendfleet.inventory_io import inventory_from_args

    inv = inventory_from_args(args)
    report = build_report(_fetch(args, inv), args.hours, time.time(), set(inv.classes))
    if args.png is not None:
        from sendfleet.monitor.chart import draw_report, write_png

        title = f"sendfleet deliveries, last {args.hours} h (from {report['window']['from']}:00 UTC)"
        write_png(args.png, draw_report(list(report["per_hour"]), report["per_hour"], _per_ip(report), title))
    code = EXIT_PROBLEMS if report["hosts_unreachable"] else EXIT_OK
    for host, error in report["hosts_unreachable"].items():
        sys.stderr.write(f"sendfleet: report: {host} left out: {error}\n")
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return code
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    table = Table(title=f"deliveries in the last {args.hours} h per sending IP and provider class")
    for col in ("host", "ip", "provider", "sent", "deferred", "bounced", "deferred %"):
        table.add_column(col, justify="right" if col in ("sent", "deferred", "bounced", "deferred %") else "left")
    for r in report["rows"]:
        tried = r["sent"] + r["deferred"] + r["bounced"]
        rate = f"{100 * r['deferred'] / tried:.1f}" if tried else "-"
        table.add_row(r["host"], r["ip"], r["provider"], str(r["sent"]), str(r["deferred"]), str(r["bounced"]), rate)
    console.print(table)
    if report["reasons"]:
        rt = Table(title="top deferral/bounce reasons (since monitoring began)")
        for col in ("host", "ip", "provider", "status", "count", "reason"):
            rt.add_column(col)
        for r in report["reasons"][:10]:
            rt.add_row(r["host"], r["ip"], r["provider"], r["status"], str(r["count"]), r["reason"])
        console.print(rt)
    if report["ips"]:
        st = Table(title="blocklist monitor")
        for col in ("host", "ip", "pool", "status", "last verdict", "since"):
            st.add_column(col)
        for i in report["ips"]:
            st.add_row(i["host"], i["ip"], str(i["pool"]), str(i["status"]), str(i["verdict"]), str(i["since"]))
        console.print(st)
    if report["hosts_without_data"]:
        console.print(f"no delivery data yet on: {', '.join(report['hosts_without_data'])}")
    if args.png is not None:
        console.print(f"chart written to {args.png}")
    return code
