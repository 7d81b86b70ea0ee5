"""The inventory model's rules over the variables a play really sees (``-e`` extra vars, ``set_fact``, vault and
Jinja values included), for ``playbooks/validate.yml``.

- ``hosts | sf_inventory_problems(hostvars)`` -> every problem the model (``sendfleet.core.inventory``) finds in
  the variables of ``hosts`` as this play sees them (empty: none). The rules are the model's, not repeated here:
  this filter only hands it the play's values.

``sendfleet inventory check`` applies the same model to the inventory's files and names the file of each problem;
this filter catches what only the play sees (an ``-e`` that overrides a file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from sendfleet.core.inventory import VARIABLES, HostSource, VarSource, build_inventory
    from sendfleet.errors import InventoryError
    from sendfleet.inventory_io import plain
except ImportError as err:  # the package is a requirement of the collection: say which Python lacks it
    import sys

    raise ImportError(f"the sendfleet Python package is not importable by {sys.executable}: {err}") from err


def sf_inventory_problems(hosts: Any, hostvars: Any) -> list[str]:
    names = [str(h) for h in hosts]
    if not names:
        return []
    sources: list[HostSource] = []
    for name in names:
        seen = hostvars[name]
        values = {key: plain(seen[key]) for key in VARIABLES if key in seen}
        groups = tuple(str(g) for g in seen.get("group_names", ()))
        sources.append(HostSource(name, groups, [VarSource(f"{name} (as the play sees it)", values)]))
    # the fleet-wide variables as the first host sees them (the model reads pools, domains... from them)
    first = sources[0].vars[0]
    try:
        build_inventory(Path(str(hostvars[names[0]].get("inventory_dir") or ".")),
                        [VarSource("the play's variables", first.data)], sources)
    except InventoryError as err:
        return list(err.problems)
    return []


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sf_inventory_problems": sf_inventory_problems}
