"""Pool selection in Postfix: one home for every rule of it. Pure: strings, numbers and mappings.

A sending IP has one transport (`transport_name`: `sf_198_51_100_72`); a pool on a host is a random choice
among its IPs' transports, `randmap:{sf_a, sf_a, sf_b}`, where a transport repeated k times (its weight) is
chosen k times as often (`weighted_members`). A weight of 0 takes the IP out of the choice (drained:
`drain`); a pool whose weights are all 0 is not in service (`pools_in_service`), and the share of each IP in
its pool is its weight over the pool's total (`shares`). The postfix role writes, per pool in service,
`pipemap:{regexp:<senders of the pool>, randmap:{...}}` into `sender_dependent_default_transport_maps`
(`pool_maps`), and each transport's limits (`transport_params`).

Who calls this module (the seam between the two writers of main.cf):

- the postfix role, through the filters of plugins/filter/sendfleet_net.py and sendfleet_warmup.py, writes
  main.cf whole from the warm-up plan with the drained IPs of the monitor's local fact at 0;
- the monitor agent (sendfleet.monitor.agent) changes, between role runs, only the randmap members of a
  pool (`rewrite_pool_maps`: warm-up weights, drained IPs at 0) and the per-transport limits
  (`transport_limit_params`, `plan_params`), leaving everything else of main.cf as the role wrote it;
- `sendfleet warmup plan` shows the same weights and shares.

Both writers compute the same values from the same inputs (the plan, the drained set), so a role run after a
monitor change writes what is already there (site.yml changed=0 while an IP is drained).

Per-transport limits (`<transport>_destination_concurrency_limit`, `<transport>_destination_rate_delay`)
are set by the monitor remembering the value found before (the baseline), so that an IP that leaves its
warm-up, or a plan that no longer limits it, gets exactly the postfix role's value back.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
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


def slug(ip: Any) -> str:
    """A transport-name-safe form of an address: `198_51_100_72`, or the 32 hex digits of an IPv6 address."""
    addr = ipaddress.ip_address(str(ip))
    if addr.version == 6:
        return addr.exploded.replace(":", "")
    return str(addr).replace(".", "_")


def transport_name(ip: Any, prefix: str = "sf") -> str:
    """The Postfix transport of a sending IP (`sf_198_51_100_72`); sendfleet.core.maillog reads it back."""
    return f"{prefix}_{slug(ip)}"


def weight_of(entry: Mapping[str, Any]) -> int:
    """The randmap weight of a sending-IP entry (inventory, warm-up plan or monitor config): 1 when unset."""
    return int(entry.get("weight", 1))


def drain(entries: Iterable[Mapping[str, Any]], drained: Collection[str]) -> list[dict[str, Any]]:
    """Copies of `entries` with weight 0 for the IPs in `drained` (out of their pool's selection)."""
    out = {str(ip) for ip in drained}
    return [dict(e, weight=0) if str(e["ip"]) in out else dict(e) for e in entries]


def shares(groups: Sequence[Hashable], weights: Sequence[int]) -> list[float]:
    """Each weight over the total of its group (a pool on a host), 0.0 in a group whose weights are all 0."""
    totals: dict[Hashable, int] = {}
    for group, weight in zip(groups, weights, strict=True):
        totals[group] = totals.get(group, 0) + weight
    return [w / totals[g] if totals[g] else 0.0 for g, w in zip(groups, weights, strict=True)]


def pool_weights(entries: Iterable[Mapping[str, Any]], prefix: str = "sf") -> dict[str, list[tuple[str, int]]]:
    """pool -> [(transport, weight)] in the entries' order (the inventory's). The transport is the entry's own
    `transport` when it has one (the warm-up plan and the monitor's config carry it), else `transport_name`."""
    out: dict[str, list[tuple[str, int]]] = {}
    for entry in entries:
        transport = str(entry.get("transport") or transport_name(entry["ip"], prefix))
        out.setdefault(str(entry["pool"]), []).append((transport, weight_of(entry)))
    return out


def pools_in_service(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """The pools with a positive total weight (sorted); a pool whose IPs are all drained is not in service."""
    totals: dict[str, int] = {}
    for entry in entries:
        totals[str(entry["pool"])] = totals.get(str(entry["pool"]), 0) + weight_of(entry)
    return sorted(pool for pool, total in totals.items() if total > 0)


def randmap_members(value: str) -> list[list[str]]:
    """The member lists of every randmap:{...} in a main.cf value, in order."""
    return [[m for m in _SEP.split(body) if m] for body in _RANDMAP.findall(value)]


def weighted_members(weights: Sequence[tuple[str, int]]) -> list[str]:
    """[(transport, weight)] -> members, each repeated weight times in place (a, a, a, b, c, c): the one layout
    of a pool's randmap, for the postfix role (`pool_randmap`) and the monitor (`rewrite_pool_maps`)."""
    return [t for t, w in weights for _ in range(max(0, w))]


def pool_randmap(entries: Iterable[Mapping[str, Any]], pool: str, prefix: str = "sf") -> str:
    """`randmap:{...}` over the transports of `pool`, each repeated its weight times. ValueError when the pool
    has no in-service address (nothing to choose from)."""
    members = weighted_members(pool_weights(entries, prefix).get(pool, []))
    if not members:
        raise ValueError(f"pool {pool!r} has no in-service address")
    return "randmap:{" + ", ".join(members) + "}"


def pool_maps(entries: Iterable[Mapping[str, Any]], prefix: str = "sf", table_dir: str = "/etc/postfix") -> list[str]:
    """The `sender_dependent_default_transport_maps` entries: one pipemap per pool in service, the pool's
    sender table piped into its randmap."""
    items = list(entries)
    return [
        f"pipemap:{{regexp:{table_dir}/sender_pool_{pool}.regexp, {pool_randmap(items, pool, prefix)}}}"
        for pool in pools_in_service(items)
    ]


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


def transport_params(transport: str, limits: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, str]:
    """Every main.cf limit of one per-IP transport as the postfix role writes it: the IP's own warm-up `limits`
    (`transport_limit_params`) where set, else the role's `defaults` (concurrency_limit, rate_delay as a Postfix
    time such as `0s`, recipient_limit). Sorted by name."""
    out = {
        f"{transport}_destination_concurrency_limit": str(defaults["concurrency_limit"]),
        f"{transport}_destination_rate_delay": str(defaults["rate_delay"]),
        f"{transport}_destination_recipient_limit": str(defaults["recipient_limit"]),
    }
    out.update(transport_limit_params(transport, limits))
    return dict(sorted(out.items()))


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


#: A provider class name: it ends a Postfix transport name, so no `_` or `-`.
CLASS_NAME = re.compile(r"[a-z][a-z0-9]{0,15}")
#: The class of every destination no other class claims; it travels on the per-IP transport `sf_<slug>`.
OTHER_CLASS = "other"
_V4_SLUG = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:_(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_V6_SLUG = re.compile(r"[0-9a-f]{32}")


def class_transport_name(ip: Any, klass: str, prefix: str = "sf") -> str:
    """The Postfix transport of a sending IP for one provider class (`sf_198_51_100_70_gmail`); class
    `other` is the IP's own transport (`transport_name`). ValueError for a class name Postfix cannot carry."""
    if not CLASS_NAME.fullmatch(klass):
        raise ValueError(f"bad provider class name {klass!r}: [a-z][a-z0-9]{{0,15}} expected")
    return class_transport_of(transport_name(ip, prefix), klass)


def split_transport(transport: str, prefix: str = "sf") -> tuple[str, str] | None:
    """The (IP, class) a sendfleet transport carries: `sf_198_51_100_70_gmail` -> ('198.51.100.70', 'gmail'),
    `sf_198_51_100_70` -> ('198.51.100.70', 'other'); None for any other name (other prefix, a slug that
    `slug` would not write, a bad class). The inverse of `transport_name` and `class_transport_name`."""
    head = prefix + "_"
    if not transport.startswith(head):
        return None
    rest = transport[len(head) :]
    # a class starts with a letter and a slug part never does, so the first '_' + letter ends the slug
    # (an IPv6 slug is 32 hex digits with no '_': its class, even 'abc', follows the 32nd digit)
    m = _V6_SLUG.match(rest) if len(rest) >= 32 and "_" not in rest[:32] else _V4_SLUG.match(rest)
    if m is None:
        return None
    body, tail = m.group(0), rest[m.end() :]
    if tail == "":
        klass = OTHER_CLASS
    elif tail[0] == "_" and CLASS_NAME.fullmatch(tail[1:]) and tail[1:] != OTHER_CLASS:
        klass = tail[1:]
    else:
        return None
    ip = str(ipaddress.IPv6Address(int(body, 16))) if len(body) == 32 else body.replace("_", ".")
    return ip, klass


def class_transport_of(transport: str, klass: str) -> str:
    """The per-class transport of an IP from its own transport's name (`sf_198_51_100_72` + gmail); class `other`
    is the IP's own transport. The one place the name is put together (`class_transport_name` calls it)."""
    return transport if klass == OTHER_CLASS else f"{transport}_{klass}"
