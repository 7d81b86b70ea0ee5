"""`sendfleet dns plan|apply|check|gate`: the records of the fleet, planned, published and verified.

sendfleet dns plan  [-i INV]... [--format zone|json]     every record needed (exit 1 if some cannot be planned)
sendfleet dns apply [-i INV]... [--dry-run] [--format table|json]
                                                    RFC 2136 + TSIG, only the differences (exit 0)
sendfleet dns check [-i INV]... [--format table|json]    what the resolver sees vs the plan, linters, FCrDNS
                                                    (exit 1 on any error, 3 if the resolver never answers)
sendfleet dns gate  [-i INV]... [--host HOST] [--format table|json]
                                                    the FCrDNS gate per sending IP; JSON: a list of
                                                    {ip, host, pool, ptr, helo, passed, fcrdns, mode, reasons}
                                                    (exit 0 all passed, 1 some left out, 3 resolver silent)

INV: any inventory source ansible-playbook takes (repeatable; default: ansible.cfg / ANSIBLE_INVENTORY), with
--vault-id / --vault-password-file for vaulted variables (sendfleet.inventory_io).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sendfleet.core import check as checks
from sendfleet.core.findings import Finding
from sendfleet.core.inventory import Inventory
from sendfleet.core.records import Plan, json_text, plan_records, zone_text
from sendfleet.dns.resolve import AuthoritativeLookup, ResolverLookup
from sendfleet.dns.update import apply as apply_plan
from sendfleet.errors import EXIT_OK, EXIT_PROBLEMS, CannotCheckError, UsageError
from sendfleet.inventory_io import add_inventory_options, inventory_from_args, read_dkim_keys


def register(sub: Any) -> None:
    parser = sub.add_parser("dns", help="plan, publish (RFC 2136) and check the fleet's DNS; the FCrDNS gate")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    def common(p: argparse.ArgumentParser, formats: tuple[str, ...]) -> None:
        add_inventory_options(p)
        p.add_argument("--format", choices=formats, default=formats[0])

    p = verbs.add_parser(
        "plan", help="every record the fleet needs, as zone-file snippets or JSON",
        description="Every record the fleet needs (PTR, A/AAAA, SPF, DKIM, DMARC, MTA-STS, TLS-RPT), per zone, with "
        "the problems found planning it. Exit 1 when a record cannot be planned (e.g. a DKIM key is missing).",
        epilog="example: sendfleet dns plan -i inventories/prod --format json")
    common(p, ("zone", "json"))
    p.set_defaults(func=cmd_plan)

    p = verbs.add_parser(
        "apply", help="publish the plan by RFC 2136 (TSIG), sending only the differences",
        description="Publish the plan to dns_update_server by RFC 2136 with TSIG, sending only what differs; records "
        "outside dns_zones are listed for you to publish elsewhere.",
        epilog="example: sendfleet dns apply -i inventories/prod --dry-run")
    common(p, ("table", "json"))
    p.add_argument("--dry-run", action="store_true", help="print the differences, send nothing")
    p.set_defaults(func=cmd_apply)

    p = verbs.add_parser(
        "check", help="resolve what is published, compare with the plan, lint, FCrDNS",
        description="Resolve what the world sees, compare it with the plan, lint SPF/DKIM/DMARC and check FCrDNS "
        "of every sending IP. Exit 1 when something differs or fails, 3 when the resolver does not answer.",
        epilog="example: sendfleet dns check -i inventories/prod --format json")
    common(p, ("table", "json"))
    p.add_argument(
        "--authoritative",
        action="store_true",
        help="ask the update server itself instead of dns_resolver (no caches; its zones only)",
    )
    p.set_defaults(func=cmd_check)

    p = verbs.add_parser(
        "gate", help="the FCrDNS gate per sending IP (used by the sending_ips/postfix roles)",
        description="The FCrDNS gate: for each sending IP, does its PTR name resolve back to it and look like a "
        "mail server's own name? An IP that fails stays out of its pools (rdns_gate: enforce).",
        epilog="example: sendfleet dns gate -i inventories/prod --host mta1")
    common(p, ("table", "json"))
    p.add_argument("--host", help="only the sending IPs of this inventory host")
    p.set_defaults(func=cmd_gate)


def _load(args: argparse.Namespace) -> tuple[Inventory, Plan]:
    inv = inventory_from_args(args)
    return inv, plan_records(inv, read_dkim_keys(inv))


def cmd_plan(args: argparse.Namespace) -> int:
    inv, plan = _load(args)
    text = json_text(plan, str(inv.path)) + "\n" if args.format == "json" else zone_text(plan, str(inv.path))
    sys.stdout.write(text)
    return EXIT_PROBLEMS if plan.errors() else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    inv, plan = _load(args)
    result = apply_plan(inv, plan, dry_run=args.dry_run)
    outside = plan.outside()
    problems = [p for p in plan.problems if p.status != "ok"]
    if args.format == "json":
        data = {
            "changed": result.sent,
            "dry_run": bool(args.dry_run),
            "changes": [c.as_dict() for c in result.changes],
            "lines": [line for c in result.changes for line in c.lines()],
            "zones": result.zones,
            "outside": [r.as_dict() for r in outside],
            "problems": [p.as_dict() for p in problems],
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return EXIT_OK
    verb = "would send" if args.dry_run else "sent"
    if not result.changes:
        sys.stdout.write("no changes: the authoritative server holds the plan\n")
    else:
        for change in result.changes:
            for line in change.lines():
                sys.stdout.write(f"{line}\n")
        sys.stdout.write(f"{len(result.changes)} RRset change(s) {verb}\n")
    if outside:
        sys.stdout.write(f"{len(outside)} record(s) outside dns_zones: ask your provider (see 'sendfleet dns plan')\n")
    for p in problems:
        sys.stderr.write(f"{p.status}: {p.subject}: {p.message}\n")
    return EXIT_OK


def _table(findings: list[Finding]) -> str:
    width = max((len(f.subject) for f in findings), default=10)
    cwidth = max((len(f.check) for f in findings), default=5)
    lines = [f"{f.status:<7} {f.subject:<{width}} {f.check:<{cwidth}} {f.message}" for f in findings]
    counts = {s: sum(1 for f in findings if f.status == s) for s in ("ok", "warning", "error")}
    lines.append(f"{counts['ok']} ok, {counts['warning']} warning(s), {counts['error']} error(s)")
    return "\n".join(lines) + "\n"


def _silent(lookup: ResolverLookup | AuthoritativeLookup) -> None:
    if lookup.asked and not lookup.answered:
        raise CannotCheckError(f"the resolver ({lookup.where}) never answered: could not check")


def cmd_check(args: argparse.Namespace) -> int:
    inv, plan = _load(args)
    lookup: ResolverLookup | AuthoritativeLookup
    if args.authoritative:
        if inv.dns_update is None:
            raise UsageError(f"{inv.path}: --authoritative needs dns_update_server in the inventory")
        lookup = AuthoritativeLookup(inv.dns_update.server, inv.dns_update.port, inv.dns_update.key)
    else:
        lookup = ResolverLookup(inv.resolver)
    try:
        findings = checks.check(inv, plan, lookup)
    finally:
        if isinstance(lookup, AuthoritativeLookup):
            lookup.close()
    _silent(lookup)
    if args.format == "json":
        sys.stdout.write(json.dumps([f.as_dict() for f in findings], indent=2) + "\n")
    else:
        sys.stdout.write(_table(findings))
    return EXIT_PROBLEMS if any(f.status == "error" for f in findings) else EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    inv = inventory_from_args(args)
    if args.host is not None and args.host not in inv.hosts:
        raise UsageError(f"--host {args.host}: not a host of {inv.path}")
    lookup = ResolverLookup(inv.resolver)
    verdicts = checks.gate(inv, lookup, args.host)
    _silent(lookup)
    if args.format == "json":
        sys.stdout.write(json.dumps([v.as_dict() for v in verdicts], indent=2) + "\n")
    else:
        sys.stdout.write(_table(checks.gate_findings(verdicts)))
    return EXIT_OK if all(v.passed for v in verdicts) else EXIT_PROBLEMS
