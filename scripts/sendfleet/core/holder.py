"""Who holds an address and what its reverse DNS looks like: not gating, reported. Pure.

- PTR: generic-looking names (`1-2-3-4.dyn.isp.example`) hurt: Yahoo and others want a non-generic PTR
  (sendfleet.core.ptrname decides, the same rule as the FCrDNS gate).
- Holder: Team-Cymru-style DNS (`origin.asn.cymru.com` TXT "ASN | prefix | CC | registry | date",
  `asn.cymru.com` TXT "ASN | CC | registry | date | NAME"), with warnings for large cloud providers' ASNs and
  small announced prefixes (providers block whole announced subnets; larger subnets mitigate this risk).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PtrInfo:
    present: bool
    name: str | None = None
    generic: bool = False
    detail: str | None = None  # when the lookup failed


@dataclass(frozen=True)
class AsnOrigin:
    asns: tuple[int, ...]
    prefix: str
    country: str | None = None
    registry: str | None = None
    allocated: str | None = None


def parse_origin_txt(texts: Iterable[str]) -> AsnOrigin | None:
    """Team-Cymru origin TXT answers; with several announcements, the most specific prefix wins."""
    best: AsnOrigin | None = None
    best_len = -1
    for text in texts:
        fields = [f.strip() for f in text.strip().strip('"').split("|")]
        if len(fields) < 2:
            continue
        try:
            asns = tuple(int(a) for a in fields[0].split())
            net = ipaddress.ip_network(fields[1], strict=False)
        except ValueError:
            continue
        if not asns:
            continue
        origin = AsnOrigin(
            asns=asns,
            prefix=str(net),
            country=(fields[2] or None) if len(fields) > 2 else None,
            registry=(fields[3] or None) if len(fields) > 3 else None,
            allocated=(fields[4] or None) if len(fields) > 4 else None,
        )
        if net.prefixlen > best_len:
            best, best_len = origin, net.prefixlen
    return best


def parse_asname_txt(texts: Iterable[str]) -> str | None:
    """Team-Cymru AS-name TXT: "64500 | ZZ | lab | 2026-01-01 | SENDFLEET-LAB, ZZ" -> "SENDFLEET-LAB, ZZ"."""
    for text in texts:
        fields = [f.strip() for f in text.strip().strip('"').split("|")]
        if len(fields) >= 5 and fields[4]:
            return fields[4]
    return None


def holder_warnings(
    origin: AsnOrigin,
    name: str | None,
    *,
    cloud_asns: Mapping[int, str],
    small_prefix: int,
    small_prefix6: int,
) -> list[str]:
    warnings: list[str] = []
    for asn in origin.asns:
        if asn in cloud_asns:
            label = name or cloud_asns[asn]
            warnings.append(
                f"AS{asn} ({label}) is a large cloud provider: cloud environments are generally not the best for mail"
            )
    net = ipaddress.ip_network(origin.prefix)
    limit = small_prefix if net.version == 4 else small_prefix6
    if net.prefixlen >= limit:
        warnings.append(
            f"announced prefix {origin.prefix} is small (/{net.prefixlen}): providers block whole subnets, "
            "larger subnets mitigate this risk"
        )
    return warnings


def announced_covers(origin: AsnOrigin, base24: int) -> bool:
    """Whether the announced prefix covers a whole IPv4 /24 (so one lookup serves every address in it)."""
    net = ipaddress.ip_network(origin.prefix)
    if net.version != 4 or net.prefixlen > 24:
        return False
    return int(net.network_address) <= base24 and base24 + 255 <= int(net.broadcast_address)
