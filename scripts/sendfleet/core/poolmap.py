"""How a pool's transport selection is changed in place in Postfix's main.cf. Pure: strings and dicts.

The postfix role writes, per pool, `pipemap:{regexp:<senders of the pool>, randmap:{sf_a, sf_b, ...}}` into
`sender_dependent_default_transport_maps`: a random choice among the pool's per-IP transports, where a
transport repeated k times is chosen k times as often. The monitor changes only the `randmap:{...}`
members of a pool (warm-up weights, drained IPs at 0), leaving everything else of the value as it is.

Per-transport limits (`<transport>_destination_concurrency_limit`, `<transport>_destination_rate_delay`)
are set the same way, remembering the value found before (the baseline), so that an IP that leaves its
warm-up, or a plan that no longer limits it, gets exactly the postfix role's value back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Result used when every IP of a pool is drained (only with drain_last): mail waits in the queue. The
#: pool's name follows, so that a later rewrite finds the pool again.
ALL_DRAINED = "retry:sendfleet_pool_drained_"

_RANDMAP = re.compile(r"randmap:\{([^{}]*)\}")
_SEP = re.compile(r"[\s,]+")

LIMIT_PARAMS = {
    "concurrency_limit": "destination_concurrency_limit",
    "rate_delay": "destination_rate_delay",
}


def randmap_members(value: str) -> list[list[str]]:
    """The member lists of every randmap:{...} in a main.cf value, in order."""
    return [[m for m in _SEP.split(body) if m] for body in _RANDMAP.findall(value)]


def weighted_members(weights: Sequence[tuple[str, int]]) -> list[str]:
    """[(transport, weight)] -> members, each repeated weight times in place (a, a, a, b, c, c): the layout
    of the postfix role's own `sf_pool_randmap`, so that both write the same value for the same weights."""
    return [t for t, w in weights for _ in range(max(0, w))]


def rewrite_pool_maps(value: str, pools: Mapping[str, Sequence[tuple[str, int]]]) -> str:
    """Rewrite the randmaps of `value` that belong to a pool of `pools` (pool -> [(transport, weight)]).

    A randmap belongs to the pool that owns most of its transports. Members that no pool of `pools` knows
    are kept once each. A pool whose weights are all 0 gets `randmap:{retry:...}` (mail waits)."""
    owner: dict[str, str] = {}
    for pool, weights in pools.items():
        for transport, _ in weights:
            owner[transport] = pool

    def replace(match: re.Match[str]) -> str:
        members = [m for m in _SEP.split(match.group(1)) if m]
        counts: dict[str, int] = {}
        for m in members:
            if m.startswith(ALL_DRAINED) and m[len(ALL_DRAINED) :] in pools:
                counts[m[len(ALL_DRAINED) :]] = len(members)
            if m in owner:
                counts[owner[m]] = counts.get(owner[m], 0) + 1
        if not counts:
            return match.group(0)
        pool = max(sorted(counts), key=lambda p: counts[p])
        foreign = list(dict.fromkeys(m for m in members if m not in owner and not m.startswith(ALL_DRAINED)))
        # the pool's order (the inventory's, as the postfix role writes it): a restored IP goes back to its
        # place, and equal weights give back exactly the postfix role's value
        new = weighted_members(pools[pool]) + foreign
        if not new:
            new = [ALL_DRAINED + pool]
        return "randmap:{" + ", ".join(new) + "}"

    return _RANDMAP.sub(replace, value)


def transport_limit_params(transport: str, limits: Mapping[str, Any]) -> dict[str, str]:
    """{'concurrency_limit': 1, 'rate_delay': 129} -> main.cf parameters of that transport."""
    out: dict[str, str] = {}
    for key, value in limits.items():
        if value is None or key not in LIMIT_PARAMS:
            continue
        suffix = "s" if key == "rate_delay" else ""
        out[f"{transport}_{LIMIT_PARAMS[key]}"] = f"{int(value)}{suffix}"
    return out


@dataclass(frozen=True)
class ParamPlan:
    changes: dict[str, str | None]  # parameter -> new value (None: remove the parameter from main.cf)
    record: dict[str, dict[str, str | None]]  # parameter -> {"baseline": ..., "set": ...}


def plan_params(
    current: Mapping[str, str | None],
    record: Mapping[str, Mapping[str, str | None]],
    desired: Mapping[str, str],
) -> ParamPlan:
    """Parameters to change so that main.cf has `desired`, and the others the monitor once set are back
    to their baseline. `current`: the value of every parameter in `desired` or `record` (None: unset).
    `record`: what the monitor set before. A parameter someone else changed since (the postfix role
    re-templated main.cf) takes that value as its new baseline."""
    changes: dict[str, str | None] = {}
    new_record: dict[str, dict[str, str | None]] = {}
    for param in sorted(set(record) | set(desired)):
        now = current.get(param)
        old = record.get(param)
        baseline = now
        if old is not None and now == old.get("set"):
            baseline = old.get("baseline")
        if param in desired:
            want: str | None = desired[param]
            new_record[param] = {"baseline": baseline, "set": want}
        else:
            want = baseline
        if want != now:
            changes[param] = want
    return ParamPlan(changes, new_record)
