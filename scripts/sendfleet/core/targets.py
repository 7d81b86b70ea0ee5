"""What `sendfleet vet` is asked to vet: addresses, CIDRs, `A-B` ranges and sender domains. Pure.

A purchased range can be large, so targets are kept as merged integer ranges and iterated lazily:
no object per address is ever created up front.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sendfleet.errors import UsageError

DEFAULT_MAX_ADDRESSES = 65_536

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Non-global networks that people meet in labs and tests, named in the warning.
_SPECIAL_NETWORKS: tuple[tuple[str, str], ...] = (
    ("192.0.2.0/24", "documentation"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("2001:db8::/32", "documentation"),
    ("198.18.0.0/15", "benchmarking"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("fc00::/7", "private (unique local)"),
    ("100.64.0.0/10", "shared address space (CGN)"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("0.0.0.0/8", "'this network'"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("240.0.0.0/4", "reserved"),
)

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, order=True)
class AddressRange:
    """An inclusive range of addresses of one IP version, as integers."""

    version: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        lo, hi = _addr(self.version, self.first), _addr(self.version, self.last)
        if self.first == self.last:
            return str(lo)
        for net in ipaddress.summarize_address_range(lo, hi):
            if net.num_addresses == self.size:
                return str(net)
            break
        return f"{lo}-{hi}"


def _addr(version: int, value: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


@dataclass(frozen=True)
class TargetSet:
    """Merged, de-duplicated targets. Address ranges are sorted and never overlap or touch."""

    ranges: tuple[AddressRange, ...]
    domains: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def address_count(self) -> int:
        return sum(r.size for r in self.ranges)

    def ranges_of(self, version: int) -> tuple[AddressRange, ...]:
        return tuple(r for r in self.ranges if r.version == version)

    def addresses(self, version: int | None = None) -> Iterator[IPAddress]:
        """Every target address, in order, one at a time."""
        for r in self.ranges:
            if version is None or r.version == version:
                for value in range(r.first, r.last + 1):
                    yield _addr(r.version, value)

    def values(self, version: int) -> Iterator[int]:
        """Every target address of one version as an integer, in order, one at a time."""
        for r in self.ranges:
            if r.version == version:
                yield from range(r.first, r.last + 1)

    def contains(self, version: int, value: int) -> bool:
        i = bisect.bisect_right(self.ranges, AddressRange(version, value, 1 << 130)) - 1
        if i < 0:
            return False
        r = self.ranges[i]
        return r.version == version and r.first <= value <= r.last

    def networks24(self) -> Iterator[int]:
        """The base (as an integer) of every IPv4 /24 that holds at least one target, in order."""
        last_base = -1
        for r in self.ranges:
            if r.version != 4:
                continue
            for base in range(r.first & ~0xFF, r.last + 1, 256):
                if base != last_base:
                    last_base = base
                    yield base

    def targets_in24(self, base: int) -> Iterator[int]:
        """Target addresses (integers) inside the /24 starting at `base`."""
        lo, hi = base, base + 255
        i = max(0, bisect.bisect_right(self.ranges, AddressRange(4, lo, -1)) - 1)
        for r in self.ranges[i:]:
            if r.version != 4 or r.first > hi:
                break
            yield from range(max(r.first, lo), min(r.last, hi) + 1)


def parse_target(text: str) -> AddressRange | str:
    """One TARGET: an address, a CIDR, a range `A-B`, or a domain name (returned lower-case, no final dot)."""
    raw = text.strip()
    if not raw:
        raise UsageError("target '': empty target")
    if "/" in raw:
        try:
            net = ipaddress.ip_network(raw, strict=True)
        except ValueError as err:
            try:
                loose = ipaddress.ip_network(raw, strict=False)
            except ValueError:
                raise UsageError(f"target {raw!r}: not a CIDR ({err})") from None
            raise UsageError(f"target {raw!r}: host bits set (did you mean {loose}?)") from None
        return AddressRange(net.version, int(net.network_address), int(net.broadcast_address))
    if "-" in raw:
        left, _, right = raw.partition("-")
        lo, hi = _maybe_address(left), _maybe_address(right)
        if lo is not None and hi is not None:
            if lo.version != hi.version:
                raise UsageError(f"target {raw!r}: range mixes IPv4 and IPv6")
            if int(lo) > int(hi):
                raise UsageError(f"target {raw!r}: range ends before it starts")
            return AddressRange(lo.version, int(lo), int(hi))
        if lo is not None or hi is not None:
            raise UsageError(f"target {raw!r}: a range must be two addresses A-B")
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        pass
    else:
        return AddressRange(addr.version, int(addr), int(addr))
    return _parse_domain(raw)


def _maybe_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _parse_domain(raw: str) -> str:
    name = raw.lower().rstrip(".")
    if not name.isascii():
        raise UsageError(f"target {raw!r}: not an address, CIDR, range or ASCII domain name (use the xn-- form)")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise UsageError(f"target {raw!r}: not an address, CIDR, range A-B or domain name")
    if labels[-1].isdigit() or all(label.isdigit() for label in labels):
        raise UsageError(f"target {raw!r}: not a valid address")
    return name


def targets_from_lines(lines: Iterable[str], source: str) -> list[str]:
    """Targets listed in a file: one or more per line (space or comma separated), `#` starts a comment."""
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0]
        for token in re.split(r"[\s,]+", text):
            if token:
                if len(token) > 300:
                    raise UsageError(f"{source} line {number}: target too long")
                out.append(token)
    return out


def special_kind(r: AddressRange) -> str | None:
    """Why a range is not global ("documentation", "private"...), or None when it is global."""
    first, last = _addr(r.version, r.first), _addr(r.version, r.last)
    for cidr, kind in _SPECIAL_NETWORKS:
        net = ipaddress.ip_network(cidr)
        if net.version != r.version:
            continue
        if int(net.network_address) <= r.last and r.first <= int(net.broadcast_address):
            return kind
    if not first.is_global or not last.is_global:
        return "non-global"
    return None


def parse_targets(texts: Iterable[str], *, max_addresses: int = DEFAULT_MAX_ADDRESSES) -> TargetSet:
    """Parse, merge and de-duplicate TARGETs; refuse more than `max_addresses` addresses."""
    ranges: list[AddressRange] = []
    domains: set[str] = set()
    warnings: list[str] = []
    seen_texts = 0
    for text in texts:
        seen_texts += 1
        parsed = parse_target(text)
        if isinstance(parsed, str):
            domains.add(parsed)
            continue
        ranges.append(parsed)
        kind = special_kind(parsed)
        if kind is not None:
            warnings.append(
                f"{text.strip()} is not globally routable ({kind}): vetted anyway, but public lists never list it"
            )
    if seen_texts == 0:
        raise UsageError("no target given (TARGET... or --from-file)")
    merged = merge_ranges(ranges)
    count = sum(r.size for r in merged)
    if count > max_addresses:
        raise UsageError(
            f"targets hold {count} addresses, more than --max-addresses {max_addresses} (raise it to scan this many)"
        )
    return TargetSet(tuple(merged), tuple(sorted(domains)), tuple(dict.fromkeys(warnings)))


def merge_ranges(ranges: Iterable[AddressRange]) -> list[AddressRange]:
    """Sort and merge overlapping or adjacent ranges of the same version."""
    merged: list[AddressRange] = []
    for r in sorted(ranges):
        if merged and merged[-1].version == r.version and r.first <= merged[-1].last + 1:
            if r.last > merged[-1].last:
                merged[-1] = AddressRange(r.version, merged[-1].first, r.last)
        else:
            merged.append(r)
    return merged
