"""The FCrDNS gate of a sending IP (pure; DNS answers come through the injected `lookup`).

An IP passes when, as a resolver sees it:
  1. it has exactly one PTR record;
  2. the PTR name does not look generic (sendfleet.core.ptrname, the rule `sendfleet vet` reports with too);
  3. that name resolves (A for IPv4, AAAA for IPv6) back to the IP;
  4. that name equals the HELO name of the IP's transport (and the inventory's `ptr`).
With `rdns_gate: warn` (or `off`) a failing IP still passes (`passed` true) but keeps its reasons and
`fcrdns` false.
The `sending_ips`/`postfix` roles call `sendfleet dns gate --format json` and keep the IPs with `passed`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from sendfleet.core.inventory import RdnsGateMode, SendingIp, normalize_name
from sendfleet.core.lookup import Lookup
from sendfleet.core.ptrname import generic_reasons


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
