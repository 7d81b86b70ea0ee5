"""Assigning vetted IPs to sender hosts. Pure: the plan is computed from data, written elsewhere.

An IP enters the inventory only through `sendfleet vet --admit` (group_vars/all/vetted_ips.yml, per pool,
with its evidence). `sendfleet pool assign` then hands vetted IPs that no host uses yet to sender hosts,
as `sending_ips` entries in host_vars/<host>.yml, with the PTR/HELO name each IP will get.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_PTR_TEMPLATE = "o{octet}.{host}.{domain}"


@dataclass(frozen=True)
class Assignment:
    host: str
    ip: str
    pool: str
    ptr: str
    warmup_start: str | None = None

    def as_entry(self) -> dict[str, str]:
        entry = {"ip": self.ip, "pool": self.pool, "ptr": self.ptr}
        if self.warmup_start:
            entry["warmup_start"] = self.warmup_start
        return entry


def ptr_name(template: str, ip: str, host: str, domain: str) -> str:
    """The PTR (= HELO) name for a sending IP, e.g. o72.mta1.lab.test."""
    addr = ipaddress.ip_address(ip)
    octet = str(addr).rsplit(".", 1)[1] if addr.version == 4 else f"{int(addr) & 0xFFFF:x}"
    return template.format(octet=octet, host=host, domain=domain, ip=str(addr).replace(".", "-").replace(":", "-"))


def plan_assignments(
    *,
    senders: Sequence[str],
    vetted: Mapping[str, Sequence[str]],
    in_use: Mapping[str, Iterable[tuple[str, str]]],
    per_host: int,
    pools: Sequence[str],
    ptr_template: str,
    domain: str,
    warmup_start: str | None = None,
) -> list[Assignment]:
    """New assignments so that every sender has up to `per_host` IPs of each pool in `pools`.

    vetted: pool -> vetted IPs in the order they were admitted. in_use: host -> (ip, pool) already
    assigned. An IP used by any host is never handed out again; hosts are filled in order.
    """
    used = {str(ipaddress.ip_address(ip)) for pairs in in_use.values() for ip, _ in pairs}
    have: dict[tuple[str, str], int] = {}
    for host, pairs in in_use.items():
        for _, pool in pairs:
            have[(host, pool)] = have.get((host, pool), 0) + 1
    out: list[Assignment] = []
    for pool in pools:
        free = [str(ipaddress.ip_address(ip)) for ip in vetted.get(pool, [])]
        free = [ip for ip in dict.fromkeys(free) if ip not in used]
        for host in senders:
            while have.get((host, pool), 0) < per_host and free:
                ip = free.pop(0)
                out.append(Assignment(host, ip, pool, ptr_name(ptr_template, ip, host, domain), warmup_start))
                have[(host, pool)] = have.get((host, pool), 0) + 1
                used.add(ip)
    return out
