"""`sendfleet warmup plan -i INVENTORY [--days N] [--today DATE] [--format table|json]`: every sending IP's
warm-up stage today and on the next days, as the dnsbl_monitor role applies it (weight in its pool's
randmap on its host, per-destination limits of its transport). The schedule is sendfleet.core.warmup,
configured by the inventory variable `warmup` (see roles/dnsbl_monitor/README.md)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sendfleet.core import warmup
from sendfleet.errors import EXIT_OK, UsageError


def register(sub: Any) -> None:
    parser = sub.add_parser("warmup", help="IP warm-up: each IP's stage, weight and limits")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=type(parser))
    verbs.required = True
    plan = verbs.add_parser("plan", help="every IP's stage today and on the next days")
    plan.add_argument("-i", "--inventory", type=Path, required=True)
    plan.add_argument("--days", type=int, default=7, help="days shown after today (default 7)")
    plan.add_argument("--today", help="plan as of this date (YYYY-MM-DD; default: today)")
    plan.add_argument("--format", choices=("table", "json"), default="table")
    plan.set_defaults(func=_plan)


def _parse_day(text: str | None) -> date:
    if text is None:
        return date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--today {text!r}: expected YYYY-MM-DD") from None


def build_plan(inventory: Path, today: date, days: int) -> dict[str, Any]:
    from sendfleet.inventory_io import load_inventory

    if not 0 <= days <= 366:
        raise UsageError(f"--days {days}: expected 0..366")
    inv = load_inventory(inventory)
    settings = warmup.settings_from(inv.vars.get("warmup"), "warmup")
    members = [(str(s.ip), s.pool, s.host, s.warmup_start) for s in inv.sending_ips()]
    per_day = [warmup.plan_pool_members(members, today + timedelta(days=d), settings) for d in range(days + 1)]
    ips: list[dict[str, Any]] = []
    for index, (ip, pool, host, start) in enumerate(members):
        rows = []
        for d, plans in enumerate(per_day):
            p = plans[index]
            rows.append(
                {
                    "date": (today + timedelta(days=d)).isoformat(),
                    "day": p.stage.day,
                    "stage": p.stage.label,
                    "warm": p.stage.warm,
                    "hourly": None if p.stage.hourly is None else round(p.stage.hourly, 1),
                    "weight": p.weight,
                    "share": round(p.share, 4),
                    "limits": p.stage.limits.as_dict(),
                }
            )
        ips.append(
            {
                "host": host,
                "pool": pool,
                "ip": ip,
                "warmup_start": start.isoformat() if start else None,
                "today": rows[0],
                "days": rows,
            }
        )
    return {
        "today": today.isoformat(),
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "ips": ips,
    }


def _limits_text(limits: dict[str, int]) -> str:
    parts = []
    if "concurrency_limit" in limits:
        parts.append(f"conc {limits['concurrency_limit']}")
    if "rate_delay" in limits:
        parts.append(f"1 per {limits['rate_delay']}s")
    return ", ".join(parts) or "-"


def _plan(args: argparse.Namespace) -> int:
    data = build_plan(args.inventory, _parse_day(args.today), args.days)
    if args.format == "json":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"warm-up plan as of {data['today']} (weight = randmap entries in the pool on its host)")
    for col in ("host", "pool", "ip", "start", "today", "hourly", "weight", "share", "limits"):
        table.add_column(col)
    for d in range(1, args.days + 1):
        table.add_column(f"+{d}d", justify="right")
    for item in data["ips"]:
        t = item["today"]
        later = [f"{r['weight']}" + ("" if r["warm"] else f" ({r['stage']})") for r in item["days"][1:]]
        table.add_row(
            item["host"],
            item["pool"],
            item["ip"],
            item["warmup_start"] or "-",
            t["stage"],
            "-" if t["hourly"] is None else f"{t['hourly']:g}/h",
            str(t["weight"]),
            f"{t['share'] * 100:.1f} %",
            _limits_text(t["limits"]),
            *later,
        )
    (Console() if sys.stdout.isatty() else Console(width=200)).print(table)
    return EXIT_OK
