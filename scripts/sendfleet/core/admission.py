"""Admitting vetted IPs into an inventory pool: `group_vars/all/vetted_ips.yml`. Pure (works on loaded data).

```yaml
vetted_ips:
  transactional:
    - {ip: 198.51.100.70, vetted: 2026-11-27, zones: [zen.lab.test, l2.lab.test], resolver: 198.51.100.4, ...}
```
Rules: only admitted addresses are written; an address already in the pool is not added twice; an address
already vetted into another pool is left there (reported, not moved); nothing is ever removed; other keys and
comments stay. A file whose shape is wrong is refused before anything is changed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping, MutableSequence
from dataclasses import dataclass, field
from typing import Any

from sendfleet.errors import UsageError

VETTED_KEY = "vetted_ips"
_POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_pool_name(pool: str) -> str:
    if not _POOL_NAME.match(pool):
        raise UsageError(f"--pool {pool!r}: a pool name is lower-case letters, digits, '-' or '_'")
    return pool


@dataclass
class AdmissionResult:
    added: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # already in this pool
    elsewhere: list[tuple[str, str]] = field(default_factory=list)  # (ip, other pool)


def existing_vetted(data: Any, source: str) -> dict[str, str]:
    """Validate a loaded vetted_ips file; return ip -> pool of every address already vetted."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: must be a mapping with a '{VETTED_KEY}' key")
    pools = data.get(VETTED_KEY)
    if pools is None:
        return {}
    if not isinstance(pools, Mapping):
        raise UsageError(f"{source}: {VETTED_KEY}: must be a mapping of pool -> list of vetted IPs")
    seen: dict[str, str] = {}
    for pool, entries in pools.items():
        where = f"{source}: {VETTED_KEY}.{pool}"
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise UsageError(f"{where}: must be a list of {{ip: ..., vetted: ...}} entries")
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or "ip" not in entry:
                raise UsageError(f"{where}[{i}]: must be a mapping with an 'ip'")
            try:
                ip = str(ipaddress.ip_address(str(entry["ip"]).strip()))
            except ValueError:
                raise UsageError(f"{where}[{i}].ip: {entry['ip']!r} is not an IP address") from None
            seen.setdefault(ip, str(pool))
    return seen


def admit(
    data: MutableMapping[str, Any],
    pool: str,
    entries: Iterable[Mapping[str, Any]],
    source: str,
    *,
    new_map: Callable[[], MutableMapping[str, Any]],
    new_list: Callable[[], MutableSequence[Any]],
) -> AdmissionResult:
    """Add each entry (a mapping with at least `ip`) to `data[vetted_ips][pool]` unless already vetted."""
    seen = existing_vetted(data, source)
    result = AdmissionResult()
    pools = data.get(VETTED_KEY)
    if pools is None:
        pools = new_map()
        data[VETTED_KEY] = pools
    target = pools.get(pool)
    for entry in entries:
        ip = str(ipaddress.ip_address(str(entry["ip"])))
        other = seen.get(ip)
        if other == pool:
            result.already.append(ip)
            continue
        if other is not None:
            result.elsewhere.append((ip, other))
            continue
        if target is None:
            target = new_list()
            pools[pool] = target
        target.append(entry)
        seen[ip] = pool
        result.added.append(ip)
    return result
