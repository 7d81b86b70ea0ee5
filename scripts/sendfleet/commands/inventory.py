"""`sendfleet inventory check`: every problem of an inventory at once, each with its file and key.

The inventory's rules live in one place, the model (`sendfleet.core.inventory`). Every command that reads the
inventory refuses it with the first problem; `playbooks/validate.yml` runs this check once on the controller
before any host changes, so `site.yml`, `sendfleet dns plan` and this command refuse the same inventories.

    sendfleet inventory check -i inventories/prod
    sendfleet inventory check -i inventories/prod --format json

Exit codes: 0 no problem, 1 problems found (listed), 2 bad usage or files that are not an inventory.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sendfleet.errors import EXIT_OK, EXIT_PROBLEMS, InventoryError
from sendfleet.inventory_io import add_inventory_options, inventory_label


def register(sub: Any) -> None:
    inventory = sub.add_parser(
        "inventory",
        help="check an inventory against sendfleet's rules",
        description="Check an inventory against sendfleet's rules (the ones site.yml and every command apply).",
    )
    verbs = inventory.add_subparsers(dest="verb", metavar="VERB", parser_class=type(inventory))
    verbs.required = True
    check = verbs.add_parser(
        "check",
        help="list every problem of the inventory, each with its file and key",
        description="List every problem of the inventory at once, each naming its file and key.",
        epilog="example: sendfleet inventory check -i inventories/prod --format json",
    )
    add_inventory_options(check)
    check.add_argument("--format", choices=("table", "json"), default="table")
    check.set_defaults(func=cmd_check)


def inventory_problems(args: argparse.Namespace) -> list[str]:
    """Every problem of the inventory the options name (empty: sendfleet accepts it). Sources that cannot be read
    as an inventory (missing, unparsable) raise UsageError: one line, exit 2, as in every command."""
    from sendfleet.inventory_io import inventory_from_args

    try:
        inventory_from_args(args)
    except InventoryError as err:
        return list(err.problems)
    return []


def _split(problem: str) -> dict[str, str]:
    """'group_vars/all/pools.yml: sender_domains.x.pool: unknown pool' -> file, key, message."""
    parts = problem.split(": ", 2)
    if len(parts) == 3:
        return {"file": parts[0], "key": parts[1], "message": parts[2]}
    return {"file": "", "key": "", "message": problem}


def cmd_check(args: argparse.Namespace) -> int:
    problems = inventory_problems(args)
    label = inventory_label(args)
    if args.format == "json":
        data = {
            "inventory": label,
            "ok": not problems,
            "problems": [{"text": p, **_split(p)} for p in problems],
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    elif problems:
        for problem in problems:
            sys.stdout.write(f"{problem}\n")
        sys.stdout.write(f"{label}: {len(problems)} problem(s); nothing was changed\n")
    else:
        sys.stdout.write(f"{label}: no problems\n")
    return EXIT_PROBLEMS if problems else EXIT_OK
