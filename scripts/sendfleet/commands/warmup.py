"""`sendfleet warmup plan -i INVENTORY [--days N] [--today DATE] [--from-hosts | --from-dir DIR] [--format table|json]`:
every sending IP's warm-up stage today and on the next days, as the dnsbl_monitor role applies it (weight in its
pool's randmap on its host, per-destination limits of its transport). The schedule is sendfleet.core.warmup,
configured by the inventory variable `warmup` (see roles/dnsbl_monitor/README.md).

What the hosts recorded changes the plan: a warm-up restarted after an idle period, the last delivery of each
IP (an IP idle too long restarts), and drained IPs (weight 0 until restored). With --from-hosts they are read
from each sender's monitor fact (/etc/ansible/facts.d/sendfleet_monitor.fact, by SSH); with --from-dir from
DIR/<host>/sendfleet_monitor.fact; without either, the plan is the inventory's alone (e.g. for new IPs)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sendfleet.core import poolmap, warmup
from sendfleet.errors import EXIT_OK, CannotCheckError, UsageError
from sendfleet.inventory_io import add_inventory_options

if TYPE_CHECKING:
    from sendfleet.core.inventory import Host, Inventory

FACT_NAME = "sendfleet_monitor.fact"
FACT_FILE = f"/etc/ansible/facts.d/{FACT_NAME}"  # written by the monitor agent (sendfleet.monitor.agent.write_fact)


def register(sub: Any) -> None:
    parser = sub.add_parser("warmup", help="IP warm-up: each IP's stage, weight and limits")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=type(parser))
    verbs.required = True
    plan = verbs.add_parser(
        "plan", help="every IP's stage today and on the next days",
        description="Each sending IP's warm-up stage today and on the next days: its weight in its pool and the "
        "limits of its transport, as the postfix role applies them.",
        epilog="example: sendfleet warmup plan -i inventories/prod --days 14 --from-hosts")
    add_inventory_options(plan)
    plan.add_argument("--days", type=int, default=7, help="days shown after today (default 7)")
    plan.add_argument("--today", help="plan as of this date (YYYY-MM-DD; default: today)")
    plan.add_argument("--format", choices=("table", "json"), default="table")
    where = plan.add_mutually_exclusive_group()
    where.add_argument("--from-hosts", action="store_true",
                       help="read each sender's recorded restarts, last deliveries and drained IPs by SSH")
    where.add_argument("--from-dir", type=Path, help=f"read them from DIR/<host>/{FACT_NAME} instead")
    plan.add_argument("--group", default="senders", help="inventory group of the senders (default senders)")
    plan.set_defaults(func=_plan)


def _parse_day(text: str | None) -> date:
    if text is None:
        return date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--today {text!r}: expected YYYY-MM-DD") from None


def _day(value: Any) -> date | None:
    """A day recorded in a host's monitor fact (warmup.recorded_day); None for what is not one, since the file
    comes from the host: an unreadable entry is left out rather than stopping the plan."""
    try:
        return warmup.recorded_day(value[:10] if isinstance(value, str) else value)
    except ValueError:
        return None


def host_records(fact: Any) -> dict[str, Any]:
    """What a sender's monitor fact says about its IPs: {restarts: {ip: date}, last_sent: {ip: date}, drained: {ip}}."""
    fact = fact if isinstance(fact, dict) else {}

    def days(key: str) -> dict[str, date]:
        raw = fact.get(key)
        return {str(ip): d for ip, v in (raw.items() if isinstance(raw, dict) else []) if (d := _day(v)) is not None}

    drained = fact.get("drained")
    return {"restarts": days("restarts"), "last_sent": days("last_sent"),
            "drained": {str(ip) for ip in drained} if isinstance(drained, list) else set()}


def build_plan(inv: Inventory, today: date, days: int,
               recorded: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The plan; `recorded`: host -> host_records(...) of the hosts that were read (others: inventory only)."""
    settings = warmup.settings_from(inv.vars.get("warmup"), "warmup")
    recorded = recorded or {}
    empty: dict[str, Any] = {"restarts": {}, "last_sent": {}, "drained": set()}
    of = [recorded.get(s.host, empty) for s in inv.sending_ips()]
    members = [(str(s.ip), s.pool, s.host, s.warmup_start) for s in inv.sending_ips()]
    # a restart recorded after an idle period, or one today for an IP idle too long (the monitor records it, so
    # the days after count from it)
    starts = [warmup.effective_start(warmup.start_with_restart(start, rec["restarts"].get(ip)), today,
                                     rec["last_sent"].get(ip), settings)[0]
              for (ip, _, _, start), rec in zip(members, of, strict=True)]
    planned = [(ip, pool, host, start) for (ip, pool, host, _), start in zip(members, starts, strict=True)]
    per_day = [_drain(warmup.plan_pool_members(planned, today + timedelta(days=d), settings), of)
               for d in range(days + 1)]
    ips: list[dict[str, Any]] = []
    for index, (ip, pool, host, start) in enumerate(members):
        rows = []
        for d, plans in enumerate(per_day):
            p, weight, share = plans[index]
            rows.append(
                {
                    "date": (today + timedelta(days=d)).isoformat(),
                    "day": p.stage.day,
                    "stage": "drained" if ip in of[index]["drained"] else p.stage.label,
                    "warm": p.stage.warm,
                    "hourly": None if p.stage.hourly is None else round(p.stage.hourly, 1),
                    "weight": weight,
                    "share": round(share, 4),
                    "limits": p.stage.limits.as_dict(),
                }
            )
        effective = starts[index]
        ips.append(
            {
                "host": host,
                "pool": pool,
                "ip": ip,
                "warmup_start": start.isoformat() if start else None,
                "restarted": effective.isoformat() if effective is not None and effective != start else None,
                "drained": ip in of[index]["drained"],
                "today": rows[0],
                "days": rows,
            }
        )
    return {
        "today": today.isoformat(),
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "hosts_read": sorted(recorded),
        "ips": ips,
    }


def _drain(plans: list[warmup.IpPlan], of: list[dict[str, Any]]) -> list[tuple[warmup.IpPlan, int, float]]:
    """(plan, weight, share) with drained IPs at weight 0 and the shares of their pool on their host renormalised,
    as the postfix role applies them (sendfleet.core.poolmap: drain, shares)."""
    entries = poolmap.drain([{"ip": p.ip, "weight": p.weight} for p in plans],
                            {p.ip for p, rec in zip(plans, of, strict=True) if p.ip in rec["drained"]})
    weights = [poolmap.weight_of(e) for e in entries]
    share = poolmap.shares([(p.host, p.pool) for p in plans], weights)
    return list(zip(plans, weights, share, strict=True))


def read_records(hosts: list[Host], from_dir: Path | None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """host -> host_records of every sender that could be read, and one line per sender that could not."""
    from sendfleet.monitor import remote

    out: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for host in hosts:
        if from_dir is not None:
            path = from_dir / host.name / FACT_NAME
            try:
                fact = json.loads(path.read_text()) if path.exists() else None
            except (OSError, ValueError) as err:
                raise UsageError(f"{path}: cannot read it as JSON ({err})") from None
        else:
            try:
                fact = remote.read_json(host.name, host.vars, FACT_FILE)
            except CannotCheckError as err:
                problems.append(f"{err}: planned from the inventory alone")
                continue
        if fact is None:
            problems.append(f"{host.name}: no monitor fact ({FACT_NAME}) yet: planned from the inventory alone")
        out[host.name] = host_records(fact)
    return out, problems


def _limits_text(limits: dict[str, int]) -> str:
    parts = []
    if "concurrency_limit" in limits:
        parts.append(f"conc {limits['concurrency_limit']}")
    if "rate_delay" in limits:
        parts.append(f"1 per {limits['rate_delay']}s")
    return ", ".join(parts) or "-"


def _plan(args: argparse.Namespace) -> int:
    from sendfleet.inventory_io import inventory_from_args

    if not 0 <= args.days <= 366:
        raise UsageError(f"--days {args.days}: expected 0..366")
    today = _parse_day(args.today)
    inv = inventory_from_args(args)
    recorded: dict[str, dict[str, Any]] = {}
    if args.from_hosts or args.from_dir is not None:
        hosts = inv.group(args.group)
        if not hosts:
            raise UsageError(f"{inv.path}: no host in group {args.group!r}")
        recorded, problems = read_records(hosts, args.from_dir)
        for line in problems:
            print(f"warmup plan: {line}", file=sys.stderr)
    data = build_plan(inv, today, args.days, recorded)
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
            (f"{item['restarted']} (restart)" if item["restarted"] else item["warmup_start"] or "-"),
            t["stage"],
            "-" if t["hourly"] is None else f"{t['hourly']:g}/h",
            str(t["weight"]),
            f"{t['share'] * 100:.1f} %",
            _limits_text(t["limits"]),
            *later,
        )
    (Console() if sys.stdout.isatty() else Console(width=200)).print(table)
    return EXIT_OK
