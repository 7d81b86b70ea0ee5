"""`sendfleet report feedback|dmarc -i INVENTORY [--days N]`: what receivers told the fleet, from the feedback
host (`python -m sendfleet.feedback report ...` over SSH), set against the senders' delivery counts (the data
`sendfleet report` reads).

feedback: bounces (hard, soft, block) and complaints per sender domain, per sending IP and per provider class
over the window. Complaint rate = complaints / messages sent (accepted by the receiving MX); bounce rate =
(hard + failed soft + block bounces) / (sent + bounced). Judged against Gmail's thresholds for the complaint (spam)
rate: 0.1 % warn, 0.3 % critical. Exit 1 when a rate is critical or a host could not be read.

dmarc: per published domain and source IP, the messages the aggregate reports counted and how many passed DKIM,
SPF and DMARC; sources that are not a fleet IP are flagged. Exit 1 when mail from a fleet IP failed DMARC."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from sendfleet.core import maillog
from sendfleet.errors import EXIT_OK, EXIT_PROBLEMS, CannotCheckError, UsageError
from sendfleet.feedback import client

COMPLAINT_WARN = 0.001  # Gmail: keep the spam rate below 0.1 %
COMPLAINT_CRITICAL = 0.003  # Gmail: never reach 0.3 %
BOUNCE_KEYS = ("hard", "soft", "block")


def complaint_status(complaints: int, sent: int) -> str:
    if sent == 0:
        return "no deliveries" if complaints else "-"
    rate = complaints / sent
    return "critical" if rate >= COMPLAINT_CRITICAL else "warn" if rate >= COMPLAINT_WARN else "ok"


def _row(key: str, fb: Mapping[str, int], sent: int, bounced: int) -> dict[str, Any]:
    bounces = sum(int(fb.get(k, 0)) for k in BOUNCE_KEYS)
    complaints = int(fb.get("complaints", 0))
    return {"key": key, "sent": sent, "bounced": bounced, **{k: int(fb.get(k, 0)) for k in BOUNCE_KEYS},
            "complaints": complaints,
            "bounce_rate": bounces / (sent + bounced) if sent + bounced else None,
            "complaint_rate": complaints / sent if sent else None,
            "status": complaint_status(complaints, sent)}


def build_feedback(feedback: Mapping[str, Any], deliveries: Mapping[str, Any] | None,
                   by_domain: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """`feedback`: the feedback host's `report feedback` JSON; `deliveries`: `report.build_report` of the same
    window (None: no sender could be read); `by_domain`: sent/deferred/bounced per sender domain in the window."""
    domains = set(feedback.get("sender_domains") or ())
    fleet = set(feedback.get("fleet_ips") or ())
    acc: dict[str, dict[str, dict[str, int]]] = {"sender_domain": {}, "ip": {}, "provider": {}}
    for r in feedback.get("rows") or []:
        keys = {"sender_domain": r["sender_domain"] if r["sender_domain"] in domains else "other",
                "ip": r["ip"] if r["ip"] in fleet else "unknown",
                "provider": r["provider"] or "other"}
        for dim, key in keys.items():
            cell = acc[dim].setdefault(key, {})
            for k in (*BOUNCE_KEYS, "complaints"):
                cell[k] = cell.get(k, 0) + int(r.get(k) or 0)
    sent: dict[str, dict[str, tuple[int, int]]] = {"sender_domain": {}, "ip": {}, "provider": {}}
    for domain, c in by_domain.items():
        key = domain if domain in domains else "other"
        s, b = sent["sender_domain"].get(key, (0, 0))
        sent["sender_domain"][key] = (s + int(c.get("sent", 0)), b + int(c.get("bounced", 0)))
    for r in (deliveries or {}).get("rows") or []:
        for dim, key in (("ip", str(r["ip"])), ("provider", str(r["provider"]))):
            s, b = sent[dim].get(key, (0, 0))
            sent[dim][key] = (s + int(r["sent"]), b + int(r["bounced"]))
    out: dict[str, Any] = {"days": feedback.get("days"), "since": feedback.get("since"),
                           "thresholds": {"complaint_warn": COMPLAINT_WARN, "complaint_critical": COMPLAINT_CRITICAL}}
    for dim in ("sender_domain", "ip", "provider"):
        names = sorted(set(acc[dim]) | set(sent[dim]))
        out[f"by_{dim}"] = [_row(k, acc[dim].get(k, {}), *sent[dim].get(k, (0, 0))) for k in names]
    out["hosts_unreachable"] = dict((deliveries or {}).get("hosts_unreachable") or {})
    return out


def _by_domain(data: Mapping[str, Mapping[str, Any]], since: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for files in data.values():
        for hour, cells in ((files.get("delivery") or {}).get("by_sender_domain") or {}).items():
            if hour < since:
                continue
            for domain, counts in (cells or {}).items():
                cell = out.setdefault(str(domain), dict.fromkeys(maillog.STATUSES, 0))
                for st in maillog.STATUSES:
                    cell[st] += int((counts or {}).get(st, 0))
    return out


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.2f}"


def run(args: argparse.Namespace, fetch: Callable[..., dict[str, dict[str, Any]]],
        build_report: Callable[..., dict[str, Any]]) -> int:
    if not 1 <= args.days <= 366:
        raise UsageError(f"--days {args.days}: expected 1..366")
    inv = None
    if not (args.local and not args.inventory and args.what == "dmarc"):
        from sendfleet.inventory_io import inventory_from_args

        inv = inventory_from_args(args)
    remote = client.run(args, inv, ["report", args.what, "--days", str(args.days), "--format", "json"])
    if args.what == "dmarc":
        return _dmarc(args, remote)
    assert inv is not None
    now = time.time()
    hours = 24 * args.days
    try:
        data = fetch(args, inv)
        deliveries: dict[str, Any] | None = build_report(data, hours, now, set(inv.classes))
        by_domain = _by_domain(data, maillog.hour_key(now - (hours - 1) * 3600))
    except CannotCheckError as err:
        sys.stderr.write(f"sendfleet: report: no delivery counts: {err}\n")
        deliveries, by_domain = None, {}
    report = build_feedback(remote, deliveries, by_domain)
    critical = any(r["status"] == "critical" for dim in ("sender_domain", "ip", "provider")
                   for r in report[f"by_{dim}"])
    code = EXIT_PROBLEMS if critical or deliveries is None or report["hosts_unreachable"] else EXIT_OK
    for host, error in report["hosts_unreachable"].items():
        sys.stderr.write(f"sendfleet: report: {host} left out: {error}\n")
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return code
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    for dim, title in (("sender_domain", "sender domain"), ("ip", "sending IP"), ("provider", "provider class")):
        table = Table(title=f"feedback in the last {args.days} days per {title} (complaints: warn >= "
                      f"{100 * COMPLAINT_WARN:.1f} %, critical >= {100 * COMPLAINT_CRITICAL:.1f} %)")
        for col in (title, "sent", "hard", "soft", "block", "bounce %", "complaints", "complaint %", "status"):
            table.add_column(col, justify="left" if col in (title, "status") else "right")
        for r in report[f"by_{dim}"]:
            table.add_row(r["key"], str(r["sent"]), str(r["hard"]), str(r["soft"]), str(r["block"]),
                          _pct(r["bounce_rate"]), str(r["complaints"]), _pct(r["complaint_rate"]), r["status"])
        console.print(table)
    return code


def _dmarc(args: argparse.Namespace, remote: Mapping[str, Any]) -> int:
    rows = list(remote.get("rows") or [])
    failing = [r for r in rows if r.get("in_fleet") and int(r["dmarc_pass"]) < int(r["messages"])]
    code = EXIT_PROBLEMS if failing else EXIT_OK
    if args.format == "json":
        sys.stdout.write(json.dumps({**remote, "fleet_sources_failing": len(failing)}, indent=2) + "\n")
        return code
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    table = Table(title=f"DMARC aggregate reports of the last {args.days} days per domain and source IP")
    for col in ("domain", "source ip", "fleet", "messages", "dkim pass", "spf pass", "dmarc pass %", "reporters"):
        table.add_column(col, justify="right" if col in ("messages", "dkim pass", "spf pass", "dmarc pass %")
                         else "left")
    for r in rows:
        rate = _pct(int(r["dmarc_pass"]) / int(r["messages"]) if int(r["messages"]) else None)
        table.add_row(r["domain"], r["source_ip"], "yes" if r.get("in_fleet") else "NOT IN FLEET", str(r["messages"]),
                      str(r["dkim_pass"]), str(r["spf_pass"]), rate, str(r["reporters"]))
    console.print(table)
    if not rows:
        console.print("no DMARC aggregate report in the window")
    outside = sorted({r["source_ip"] for r in rows if not r.get("in_fleet")})
    if outside:
        console.print(f"{len(outside)} source IP(s) not in the fleet sent mail as your domains (spoofing, or a sender "
                      f"you forgot): {', '.join(outside)}")
    tls = list(remote.get("tlsrpt") or [])
    table = Table(title=f"TLS-RPT reports of the last {args.days} days per policy domain")
    for col in ("policy domain", "policy", "sessions ok", "failed", "failures", "reporters"):
        table.add_column(col, justify="right" if col in ("sessions ok", "failed") else "left")
    for t in tls:
        failures = ", ".join(f"{k} {v}" for k, v in sorted((t.get("failures") or {}).items()))
        table.add_row(t["policy_domain"], t["policy_type"], str(t["success"]), str(t["failure"]), failures or "-",
                      str(t["reporters"]))
    console.print(table)
    if not tls:
        console.print("no TLS-RPT report in the window")
    return code
