"""The FCrDNS gate of a sending IP (pure; DNS answers come through the injected `lookup`).

An IP passes when, as a resolver sees it:
  1. it has exactly one PTR record;
  2. the PTR name does not look generic (digits of the IP in it, or words like dyn/dhcp/pool/static);
  3. that name resolves (A for IPv4, AAAA for IPv6) back to the IP;
  4. that name equals the HELO name of the IP's transport (and the inventory's `ptr`).
With `rdns_gate: warn` (or `off`) a failing IP still passes (`passed` true) but keeps its reasons and
`fcrdns` false.
The `sending_ips`/`postfix` roles call `sendfleet dns gate --format json` and keep the IPs with `passed`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sendfleet.core.inventory import IPAddress, RdnsGateMode, SendingIp, normalize_name
from sendfleet.core.lookup import Lookup

GENERIC_WORDS = frozenset(
    {
        "dyn",
        "dynamic",
        "dynip",
        "dhcp",
        "pool",
        "static",
        "dsl",
        "adsl",
        "vdsl",
        "xdsl",
        "sdsl",
        "cable",
        "ppp",
        "pppoe",
        "dial",
        "dialup",
        "dialin",
        "broadband",
        "bb",
        "cust",
        "customer",
        "customers",
        "client",
        "clients",
        "res",
        "resident",
        "residential",
        "unknown",
        "unassigned",
        "nat",
        "mobile",
        "wireless",
        "wifi",
        "lte",
        "ftth",
        "fttx",
        "fiber",
        "reverse",
        "rev",
        "generic",
        "noptr",
    }
)


@dataclass(frozen=True)
class GateVerdict:
    ip: str
    host: str
    pool: str
    ptr: str | None  # the published PTR name (None: none, or the lookup failed)
    helo: str
    fcrdns: bool  # the rules hold
    passed: bool  # the IP may enter its pool (fcrdns, or rdns_gate: warn)
    reasons: tuple[str, ...]  # why the rules do not hold (kept in warn mode)
    mode: RdnsGateMode
    answered: bool  # the resolver answered (False: timeouts/errors only)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "host": self.host,
            "pool": self.pool,
            "ptr": self.ptr,
            "helo": self.helo,
            "passed": self.passed,
            "fcrdns": self.fcrdns,
            "mode": self.mode,
            "reasons": list(self.reasons),
        }


def generic_reasons(name: str, ip: IPAddress) -> list[str]:
    """Why a PTR name looks like an ISP's generic name for `ip` (empty: it does not)."""
    name = normalize_name(name)
    reasons: list[str] = []
    tokens = [t for t in re.split(r"[.\-_]", name) if t]
    words = sorted({w for t in tokens if (w := t.strip("0123456789")) in GENERIC_WORDS})
    if words:
        reasons.append(f"PTR name {name} looks generic (contains {', '.join(words)})")
    if isinstance(ip, ipaddress.IPv4Address):
        octets = [str(o) for o in ip.packed]
        runs = [str(int(r)) for r in re.findall(r"\d+", name)]
        matched = sum((Counter(runs) & Counter(octets)).values())
        pairs = {(octets[2], octets[3]), (octets[3], octets[2])}
        adjacent = any((runs[i], runs[i + 1]) in pairs for i in range(len(runs) - 1))
        hexform = ip.packed.hex()
        if matched >= 3 or adjacent or hexform in name.replace("-", "") or str(int(ip)) in runs:
            reasons.append(f"PTR name {name} looks generic (built from the digits of {ip})")
    else:
        hextets = [h.lstrip("0") or "0" for h in ip.exploded.split(":")]
        nonzero = Counter(h for h in hextets if h != "0")
        found = sum((Counter(t.lstrip("0") or "0" for t in tokens) & nonzero).values())
        compact = ip.exploded.replace(":", "")
        if found >= 3 or compact[-12:] in name.replace("-", "") or compact[-12:][::-1] in name.replace(".", ""):
            reasons.append(f"PTR name {name} looks generic (built from the digits of {ip})")
    return reasons


def evaluate(sip: SendingIp, lookup: Lookup, mode: RdnsGateMode = "enforce") -> GateVerdict:
    """Apply the gate to one sending IP through `lookup` (the resolver's view)."""
    reasons: list[str] = []
    answered = True
    ptr_answer = lookup(sip.ip.reverse_pointer, "PTR")
    ptr: str | None = None
    if ptr_answer.status == "error":
        answered = False
        reasons.append(f"PTR lookup failed ({ptr_answer.detail or 'error'})")
    elif ptr_answer.void or not ptr_answer.values:
        reasons.append("no PTR record")
    elif len(ptr_answer.values) > 1:
        reasons.append(
            f"{len(ptr_answer.values)} PTR records ({', '.join(sorted(ptr_answer.values))}); exactly one needed"
        )
        ptr = sorted(ptr_answer.values)[0]
    else:
        ptr = normalize_name(ptr_answer.values[0])
    if ptr is not None and len(ptr_answer.values) == 1:
        reasons += generic_reasons(ptr, sip.ip)
        rdtype = "A" if sip.ip.version == 4 else "AAAA"
        fwd = lookup(ptr, rdtype)
        if fwd.status == "error":
            reasons.append(f"{rdtype} lookup of {ptr} failed ({fwd.detail or 'error'})")
        elif fwd.void:
            reasons.append(f"{ptr} has no {rdtype} record ({fwd.status}): no forward confirmation")
        else:
            addrs = set()
            for value in fwd.values:
                try:
                    addrs.add(ipaddress.ip_address(value))
                except ValueError:
                    continue
            if sip.ip not in addrs:
                reasons.append(f"{ptr} resolves to {', '.join(sorted(fwd.values))}, not back to {sip.ip}")
        if ptr != sip.helo:
            reasons.append(f"PTR name {ptr} differs from the HELO name {sip.helo}")
        elif ptr != sip.ptr:
            reasons.append(f"PTR name {ptr} differs from the inventory's ptr {sip.ptr}")
    fcrdns = not reasons
    return GateVerdict(
        ip=str(sip.ip),
        host=sip.host,
        pool=sip.pool,
        ptr=ptr,
        helo=sip.helo,
        fcrdns=fcrdns,
        passed=fcrdns or mode != "enforce",
        reasons=tuple(reasons),
        mode=mode,
        answered=answered,
    )
