#!/usr/bin/env python3
"""Exit 0 when the authoritative server serves the DKIM record of DOMAIN/SELECTOR exactly as planned.

usage: dkim_published.py DOMAIN SELECTOR INVENTORY...   (every source of the inventory, as ansible-playbook -i)
Exit 0: published, carrying the controller's key; 1: not yet, or the server did not answer (printed: ask
again); 2: bad usage, or no such record in the plan (asking again will not help).

The record is the one `sendfleet dns apply` publishes (the same plan, from the controller's key) and the
server is asked the way `sendfleet dns check --authoritative` asks it: the inventory's dns_update_server
itself (a name or an address, dns_update_port, TSIG when the inventory has a key), over TCP, no resolver,
no cache. Run it with the Python that has sendfleet installed (ansible_playbook_python).
"""

from __future__ import annotations

import sys
from pathlib import Path

from sendfleet.core import dkim
from sendfleet.core.records import plan_records
from sendfleet.dns.resolve import AuthoritativeLookup
from sendfleet.errors import CannotCheckError, UsageError
from sendfleet.inventory_io import load_inventory, read_dkim_keys


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write(__doc__ or "")
        return 2
    domain, selector, *sources = argv
    inventory = ", ".join(sources)
    subject = f"{domain}/{selector}"
    try:
        inv = load_inventory([Path(s) for s in sources])
        plan = plan_records(inv, read_dkim_keys(inv))
    except UsageError as err:
        print(f"dkim_published: {err}")
        return 2
    if inv.dns_update is None:
        print(f"dkim_published: {inventory}: no dns_update_server: no authoritative server to ask")
        return 2
    planned = [r for r in plan.records if r.purpose == "dkim" and r.subject == subject and r.values and not r.error]
    if not planned:
        print(f"dkim_published: {subject}: no DKIM record in the plan (selector not listed, or no key yet)")
        return 2
    record = planned[0]
    server = inv.dns_update
    where = f"{server.server} port {server.port}"
    lookup = AuthoritativeLookup(server.server, server.port, server.key)
    try:
        answer = lookup(record.name, "TXT")
    except CannotCheckError as err:
        print(f"{record.name} TXT: {err}")
        return 1
    finally:
        lookup.close()
    if answer.status == "error":
        print(f"{record.name} TXT at {where}: {answer.detail}")
        return 1
    findings = dkim.lint(subject, answer.values, dkim.parse_tags(record.values[0]).get("p"))
    errors = [f.message for f in findings if f.status == "error"]
    if errors:
        print(f"{record.name} TXT at {where}: not yet as planned: {'; '.join(errors)}")
        return 1
    print(f"{record.name} TXT at {where} carries the controller's key")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
