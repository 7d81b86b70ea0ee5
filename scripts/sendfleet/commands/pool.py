"""`sendfleet pool list | assign`: the vetted IPs of each pool and which sender host uses them.

Both read the inventory as Ansible does (`sendfleet.inventory_io`: any source, `-i` optional and repeatable);
`assign` writes the new `sending_ips` entries into `host_vars/<host>.yml` of the inventory's variables folder
(`inventory_io.vars_dir`: the inventory folder, or `sendfleet_vars_dir`), keeping comments, atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sendfleet import yamlfile
from sendfleet.core.assign import DEFAULT_PTR_TEMPLATE, plan_assignments, ptr_name
from sendfleet.core.inventory import Inventory
from sendfleet.errors import EXIT_OK, UsageError
from sendfleet.inventory_io import add_inventory_options, inventory_from_args, writable_vars_file

SENDERS = "senders"


def register(sub: Any) -> None:
    pool = sub.add_parser("pool", help="vetted IPs per pool, and their assignment to sender hosts")
    verbs = pool.add_subparsers(dest="verb", metavar="VERB", parser_class=type(pool))
    verbs.required = True
    ls = verbs.add_parser(
        "list", help="every vetted IP, its pool and the host that uses it",
        description="Every vetted IP (vetted_ips), its pool, and the sender host that uses it (or 'available').",
        epilog="example: sendfleet pool list -i inventories/prod --format json")
    add_inventory_options(ls)
    ls.add_argument("--format", choices=("table", "json"), default="table")
    ls.set_defaults(func=_list)
    assign = verbs.add_parser(
        "assign", help="give sender hosts vetted IPs that no host uses yet",
        description="Give each sender host vetted IPs of a pool that no host uses yet, with their PTR/HELO names: "
        "appends to each host's sending_ips (comments kept). Prints what it assigns.",
        epilog="example: sendfleet pool assign -i inventories/prod --pool transactional --per-host 2 "
        "--warmup-start today")
    add_inventory_options(assign)
    assign.add_argument("--pool", action="append", dest="pools", metavar="NAME",
                        help="pool to assign from (repeatable; default: every pool with vetted IPs)")
    assign.add_argument("--per-host", type=int, default=2, help="IPs of each pool per sender (default 2)")
    assign.add_argument("--hosts", help="comma-separated sender hosts (default: group senders)")
    assign.add_argument("--ptr-template", default=DEFAULT_PTR_TEMPLATE,
                        help="PTR/HELO name; fields {octet} {host} {domain} {ip} (default %(default)s)")
    assign.add_argument("--domain", help="domain for {domain} (default: inventory var host_domain)")
    assign.add_argument("--warmup-start", metavar="YYYY-MM-DD",
                        help="start a warm-up schedule for the new IPs on this date ('today' allowed)")
    assign.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    assign.add_argument("--format", choices=("table", "json"), default="table")
    assign.set_defaults(func=_assign)


def _senders(inv: Inventory) -> list[str]:
    senders = [h.name for h in inv.group(SENDERS)]
    if not senders:
        raise UsageError(f"{inv.path}: no host in group {SENDERS!r}")
    return senders


def _vetted(inv: Inventory) -> dict[str, list[str]]:
    return {pool: [str(v.ip) for v in entries] for pool, entries in inv.vetted_ips.items()}


def _in_use(inv: Inventory, hosts: list[str]) -> dict[str, list[tuple[str, str]]]:
    return {h: [(str(s.ip), s.pool) for s in inv.hosts[h].sending_ips] for h in hosts}


def _host_vars(inv: Inventory, host: str) -> tuple[Path, Any]:
    """The host's YAML vars file that sendfleet writes `sending_ips` to, loaded round-trip (refused in one line when
    Ansible takes the host's sending_ips from somewhere else)."""
    path = writable_vars_file(inv, "sending_ips", host=host)
    data = yamlfile.load(path, missing_ok=True)
    if data is None:
        data = yamlfile.load_text("{}\n")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping")
    ips = data.get("sending_ips")
    if ips is not None and not (isinstance(ips, list) and all(isinstance(e, dict) and "ip" in e for e in ips)):
        raise UsageError(f"{path}: sending_ips must be a list of entries with an 'ip' (sendfleet appends to it)")
    return path, data


def _list(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    hosts = _senders(inv)
    user = {ip: h for h, pairs in _in_use(inv, hosts).items() for ip, _ in pairs}
    rows = [{"pool": p, "ip": ip, "host": user.get(ip)} for p, ips in _vetted(inv).items() for ip in ips]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title=f"vetted IPs in {inv.path}")
    for col in ("pool", "ip", "host"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["pool"], r["ip"], r["host"] or "[dim]available[/]")
    Console().print(table)
    return EXIT_OK


def _assign(args: argparse.Namespace) -> int:
    if args.per_host < 1:
        raise UsageError(f"--per-host {args.per_host}: must be at least 1")
    inv = inventory_from_args(args)
    senders = _senders(inv)
    hosts = [h.strip() for h in args.hosts.split(",")] if args.hosts else senders
    unknown = [h for h in hosts if h not in senders]
    if unknown:
        raise UsageError(f"--hosts: {', '.join(unknown)} not in group {SENDERS} of {inv.path}")
    vetted = _vetted(inv)
    pools = args.pools or list(vetted)
    missing = [p for p in pools if p not in vetted]
    if missing:
        raise UsageError(f"--pool {missing[0]}: no vetted IPs in that pool (run 'sendfleet vet --admit' first)")
    warmup = args.warmup_start
    if warmup == "today":
        warmup = dt.date.today().isoformat()
    if warmup is not None:
        try:
            dt.date.fromisoformat(warmup)
        except ValueError:
            raise UsageError(f"--warmup-start {warmup!r}: expected YYYY-MM-DD or 'today'") from None
    domain = args.domain
    if domain is None:
        domain = inv.vars.get("host_domain")
        if not domain or not isinstance(domain, str):
            raise UsageError("--domain is required (the inventory has no host_domain)")
    try:  # a bad template is bad input even when there is nothing to assign today
        ptr_name(args.ptr_template, "192.0.2.1", hosts[0] if hosts else "host", domain)
    except (KeyError, IndexError, ValueError) as err:
        raise UsageError(f"--ptr-template {args.ptr_template!r}: unknown field {err}") from None
    try:
        plan = plan_assignments(senders=hosts, vetted=vetted, in_use=_in_use(inv, senders), per_host=args.per_host,
                                pools=pools, ptr_template=args.ptr_template, domain=domain, warmup_start=warmup)
    except (KeyError, IndexError, ValueError) as err:
        raise UsageError(f"--ptr-template {args.ptr_template!r}: {err}") from None
    # every file is found and read before anything is printed or written: a refusal leaves every file as it was
    targets = [(_host_vars(inv, host), [a for a in plan if a.host == host]) for host in hosts
               if any(a.host == host for a in plan)]
    if args.format == "json":
        print(json.dumps({"dry_run": bool(args.dry_run), "assigned": [
            {"host": a.host, **{k: str(v) for k, v in a.as_entry().items()}} for a in plan]}, indent=2))
    else:
        for a in plan:
            print(f"{a.host}: {a.ip} -> pool {a.pool}, PTR/HELO {a.ptr}")
        if not plan:
            print("nothing to assign: every sender has its share (or no vetted IP is free)")
    if args.dry_run or not plan:
        return EXIT_OK
    for (path, data), mine in targets:
        entries = data.get("sending_ips")
        if entries is None:
            entries = yamlfile.load_text("[]\n")
            data["sending_ips"] = entries
        for a in mine:
            entries.append(a.as_entry())
        yamlfile.dump_atomic(path, data)
    return EXIT_OK
