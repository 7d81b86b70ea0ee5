"""Zones files: which blocklists to ask and what their answers mean. Pure (parses loaded YAML data).

```yaml
zones:
  - zone: zen.spamhaus.org            # required
    listed: ["127.0.0.2-127.0.0.11"]  # required: answers meaning "listed" (address, CIDR or A-B)
    errors: ["127.255.255.0/24"]      # optional: answers meaning the list refused to answer
    meanings: {"127.0.0.2": SBL}      # optional: code -> what it means
    scope: address                    # address (default) | network | asn
    ipv6: false                       # default false: not asked about IPv6 addresses
    qps: 50                           # optional rate limit (queries per second) for this zone
    kind: ip                          # ip (default) | domain (asked about sender domains)
    enabled: true                     # default true; false keeps a documented zone off
    note: "..."                       # optional, shown in reports
asn:                                  # optional: Team-Cymru-style holder lookups
  origin: origin.asn.cymru.com        # TXT "ASN | prefix | CC | registry | date" per reversed IPv4
  origin6: origin6.asn.cymru.com      # optional, the same for IPv6 nibbles
  names: asn.cymru.com                # optional, TXT "ASN | CC | registry | date | NAME" for AS<n>
  cloud_asns: {16509: Amazon}         # optional, replaces the built-in list of large cloud ASNs
  small_prefix: 24                    # optional: warn when the announced IPv4 prefix is this long or longer
  small_prefix6: 48                   # optional: the same for IPv6
```
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sendfleet.errors import UsageError

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")

#: Large cloud providers' ASNs ("cloud environments are generally not the best" for mail).
DEFAULT_CLOUD_ASNS: Mapping[int, str] = {
    16509: "Amazon",
    14618: "Amazon",
    8987: "Amazon",
    15169: "Google",
    396982: "Google Cloud",
    19527: "Google",
    8075: "Microsoft",
    8068: "Microsoft",
    14061: "DigitalOcean",
    16276: "OVH",
    24940: "Hetzner",
    213230: "Hetzner",
    63949: "Akamai (Linode)",
    20473: "Vultr (Choopa)",
    31898: "Oracle Cloud",
    45102: "Alibaba Cloud",
    132203: "Tencent Cloud",
    12876: "Scaleway",
    51167: "Contabo",
    13335: "Cloudflare",
}


class Scope(StrEnum):
    ADDRESS = "address"
    NETWORK = "network"
    ASN = "asn"


class Kind(StrEnum):
    IP = "ip"
    DOMAIN = "domain"


@dataclass(frozen=True)
class CodeSet:
    """A set of IPv4 answer codes, as sorted, merged inclusive integer ranges."""

    ranges: tuple[tuple[int, int], ...] = ()
    texts: tuple[str, ...] = ()

    def __contains__(self, code: object) -> bool:
        if isinstance(code, str):
            try:
                value = int(ipaddress.IPv4Address(code))
            except ValueError:
                return False
        elif isinstance(code, int):
            value = code
        else:
            return False
        i = bisect.bisect_right(self.ranges, (value, 1 << 33)) - 1
        return i >= 0 and self.ranges[i][0] <= value <= self.ranges[i][1]

    def overlaps(self, other: CodeSet) -> int | None:
        for lo, hi in self.ranges:
            for olo, ohi in other.ranges:
                if lo <= ohi and olo <= hi:
                    return max(lo, olo)
        return None


@dataclass(frozen=True)
class Zone:
    name: str
    listed: CodeSet
    errors: CodeSet = field(default_factory=CodeSet)
    meanings: Mapping[str, str] = field(default_factory=dict)
    scope: Scope = Scope.ADDRESS
    ipv6: bool = False
    qps: float | None = None
    kind: Kind = Kind.IP
    enabled: bool = True
    note: str | None = None

    def meaning(self, code: str) -> str | None:
        return self.meanings.get(code)


@dataclass(frozen=True)
class AsnConfig:
    origin: str
    origin6: str | None = None
    names: str | None = None
    cloud_asns: Mapping[int, str] = field(default_factory=lambda: dict(DEFAULT_CLOUD_ASNS))
    small_prefix: int = 24
    small_prefix6: int = 48


@dataclass(frozen=True)
class ZonesConfig:
    zones: tuple[Zone, ...]
    asn: AsnConfig | None = None

    @property
    def enabled(self) -> tuple[Zone, ...]:
        return tuple(z for z in self.zones if z.enabled)


def _key(value: object) -> str:
    """A key as it may be shown in a one-line message."""
    text = str(value)
    return text if re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", text) else repr(text)[:60]


_ZONE_KEYS = {"zone", "listed", "errors", "meanings", "scope", "ipv6", "qps", "kind", "enabled", "note"}
_ASN_KEYS = {"origin", "origin6", "names", "cloud_asns", "small_prefix", "small_prefix6"}


def dns_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: must be a DNS zone name")
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 200 or len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
        raise UsageError(f"{where}: {value!r} is not a valid DNS zone name")
    return name


def parse_codes(value: Any, where: str, *, required: bool) -> CodeSet:
    """Answer codes: a list of IPv4 addresses, CIDRs or `A-B` ranges (a single string is accepted)."""
    if value is None:
        if required:
            raise UsageError(f"{where}: required (a list of answer addresses, CIDRs or A-B ranges)")
        return CodeSet()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or (required and not items):
        raise UsageError(f"{where}: must be a non-empty list of answer addresses, CIDRs or A-B ranges")
    ranges: list[tuple[int, int]] = []
    texts: list[str] = []
    for i, item in enumerate(items):
        ranges.append(_parse_code(item, f"{where}[{i}]"))
        texts.append(str(item).strip())
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return CodeSet(tuple(merged), tuple(texts))


def _parse_code(item: Any, where: str) -> tuple[int, int]:
    if not isinstance(item, str):
        raise UsageError(f"{where}: {item!r} is not an IPv4 address, CIDR or A-B range")
    text = item.strip()
    try:
        if "/" in text:
            net = ipaddress.IPv4Network(text, strict=True)
            return int(net.network_address), int(net.broadcast_address)
        if "-" in text:
            left, _, right = text.partition("-")
            lo, hi = int(ipaddress.IPv4Address(left.strip())), int(ipaddress.IPv4Address(right.strip()))
            if lo > hi:
                raise UsageError(f"{where}: range {text!r} ends before it starts")
            return lo, hi
        value = int(ipaddress.IPv4Address(text))
        return value, value
    except ValueError:
        raise UsageError(f"{where}: {item!r} is not an IPv4 address, CIDR or A-B range") from None


def _parse_bool(value: Any, where: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UsageError(f"{where}: must be true or false, not {value!r}")
    return value


def parse_zone(data: Any, where: str) -> Zone:
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: must be a mapping with at least 'zone' and 'listed'")
    unknown = sorted(_key(k) for k in data if k not in _ZONE_KEYS)
    if unknown:
        raise UsageError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(_ZONE_KEYS))})")
    if "zone" not in data:
        raise UsageError(f"{where}.zone: required")
    name = dns_name(data["zone"], f"{where}.zone")
    listed = parse_codes(data.get("listed"), f"{where}.listed", required=True)
    errors = parse_codes(data.get("errors"), f"{where}.errors", required=False)
    clash = listed.overlaps(errors)
    if clash is not None:
        raise UsageError(f"{where}: listed and errors both hold {ipaddress.IPv4Address(clash)}")
    meanings_raw = data.get("meanings")
    meanings: dict[str, str] = {}
    if meanings_raw is not None:
        if not isinstance(meanings_raw, Mapping):
            raise UsageError(f"{where}.meanings: must be a mapping of answer address -> meaning")
        for code, meaning in meanings_raw.items():
            try:
                key = str(ipaddress.IPv4Address(str(code).strip()))
            except ValueError:
                raise UsageError(f"{where}.meanings: {code!r} is not an IPv4 answer address") from None
            if not isinstance(meaning, str | int | float) or isinstance(meaning, bool):
                raise UsageError(f"{where}.meanings.{key}: must be text")
            meanings[key] = str(meaning)
    scope_raw = data.get("scope", "address")
    try:
        scope = Scope(scope_raw)
    except ValueError:
        raise UsageError(f"{where}.scope: {scope_raw!r} is not one of address, network, asn") from None
    kind_raw = data.get("kind", "ip")
    try:
        kind = Kind(kind_raw)
    except ValueError:
        raise UsageError(f"{where}.kind: {kind_raw!r} is not one of ip, domain") from None
    ipv6 = _parse_bool(data.get("ipv6"), f"{where}.ipv6", False)
    if kind is Kind.DOMAIN and ipv6:
        raise UsageError(f"{where}.ipv6: a kind: domain zone is asked about domains, not IPv6 addresses")
    if kind is Kind.DOMAIN and scope is not Scope.ADDRESS:
        raise UsageError(f"{where}.scope: a kind: domain zone has no network or asn scope")
    qps_raw = data.get("qps")
    qps: float | None = None
    if qps_raw is not None:
        if isinstance(qps_raw, bool) or not isinstance(qps_raw, int | float) or not 0 < qps_raw <= 1_000_000:
            raise UsageError(f"{where}.qps: must be a positive number of queries per second")
        qps = float(qps_raw)
    enabled = _parse_bool(data.get("enabled"), f"{where}.enabled", True)
    note_raw = data.get("note")
    if note_raw is not None and not isinstance(note_raw, str):
        raise UsageError(f"{where}.note: must be text")
    return Zone(
        name=name,
        listed=listed,
        errors=errors,
        meanings=meanings,
        scope=scope,
        ipv6=ipv6,
        qps=qps,
        kind=kind,
        enabled=enabled,
        note=note_raw,
    )


def parse_asn(data: Any, where: str) -> AsnConfig:
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: must be a mapping with at least 'origin'")
    unknown = sorted(_key(k) for k in data if k not in _ASN_KEYS)
    if unknown:
        raise UsageError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(_ASN_KEYS))})")
    if "origin" not in data:
        raise UsageError(f"{where}.origin: required (e.g. origin.asn.cymru.com)")
    origin = dns_name(data["origin"], f"{where}.origin")
    origin6 = dns_name(data["origin6"], f"{where}.origin6") if data.get("origin6") is not None else None
    names = dns_name(data["names"], f"{where}.names") if data.get("names") is not None else None
    cloud: dict[int, str] = dict(DEFAULT_CLOUD_ASNS)
    if data.get("cloud_asns") is not None:
        raw = data["cloud_asns"]
        if not isinstance(raw, Mapping):
            raise UsageError(f"{where}.cloud_asns: must be a mapping of ASN -> provider name")
        cloud = {}
        for asn, label in raw.items():
            number = _asn_number(asn)
            if number is None:
                raise UsageError(f"{where}.cloud_asns: {asn!r} is not an AS number")
            cloud[number] = str(label)
    small = _prefix_len(data.get("small_prefix"), f"{where}.small_prefix", 24, 32)
    small6 = _prefix_len(data.get("small_prefix6"), f"{where}.small_prefix6", 48, 128)
    return AsnConfig(origin, origin6, names, cloud, small, small6)


def _asn_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    text = str(value).strip().upper().removeprefix("AS")
    if not text.isdigit():
        return None
    number = int(text)
    return number if 0 < number < 2**32 else None


def _prefix_len(value: Any, where: str, default: int, maximum: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise UsageError(f"{where}: must be a prefix length 0-{maximum}")
    return value


def parse_zones(data: Any, source: str) -> ZonesConfig:
    """Validate a loaded zones file. Every problem is one UsageError line naming the field."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: must be a mapping with a 'zones' list")
    unknown = sorted(_key(k) for k in data if k not in {"zones", "asn"})
    if unknown:
        raise UsageError(f"{source}: {unknown[0]}: unknown key (known: asn, zones)")
    raw_zones = data.get("zones")
    if not isinstance(raw_zones, list) or not raw_zones:
        raise UsageError(f"{source}: zones: must be a non-empty list")
    zones: list[Zone] = []
    seen: set[str] = set()
    for i, item in enumerate(raw_zones):
        zone = parse_zone(item, f"{source}: zones[{i}]")
        if zone.name in seen:
            raise UsageError(f"{source}: zones[{i}].zone: {zone.name} is listed twice")
        seen.add(zone.name)
        zones.append(zone)
    if not any(z.enabled for z in zones):
        raise UsageError(f"{source}: zones: every zone has enabled: false")
    asn = parse_asn(data["asn"], f"{source}: asn") if data.get("asn") is not None else None
    return ZonesConfig(tuple(zones), asn)
