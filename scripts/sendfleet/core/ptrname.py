"""Does a PTR name look like an ISP's generic name for its address? One rule for `sendfleet vet` (reported as
`generic`) and the FCrDNS gate of a sending IP (sendfleet.core.fcrdns: refused), so they never disagree. Pure.

A name is generic when
- one of its labels, digits stripped from both ends (`dyn5`, `5dsl`), is a word ISPs use for end-user or
  unassigned addresses (`GENERIC_WORDS`: dyn, dhcp, pool, static, dsl, cable, cust, res, ...); the last label
  (the TLD) is not looked at;
- or it is built from the digits of the address: for IPv4 three or more of its octets as numbers in the name,
  the last two next to each other (either order: `host100-70`), the octets joined (`198-51-100-70`,
  `70.100.51.198`, `198051100070`), the address as hex (`c6336446`) or as one number; for IPv6 three or more
  of its hextets as labels, or its last 12 (or 16) hex digits run together, forwards or backwards.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Words that mark a name as assigned to end users, or not really assigned at all.
GENERIC_WORDS = frozenset(
    {
        "adsl", "bb", "broadband", "cable", "client", "clients", "cpe", "cust", "customer", "customers", "dhcp",
        "dial", "dialin", "dialup", "dip", "dsl", "dyn", "dynamic", "dynip", "fiber", "ftth", "fttx", "generic",
        "gprs", "home", "ip", "lte", "mobile", "nat", "noptr", "pool", "ppp", "pppoe", "ptr", "res", "resident",
        "residential", "rev", "reverse", "sdsl", "static", "unassigned", "unknown", "user", "users", "vdsl", "vps",
        "wifi", "wireless", "xdsl",
    }
)

_LABEL_SEP = re.compile(r"[.\-_]+")


def generic_reasons(name: str, ip: IPAddress | str) -> list[str]:
    """Why a PTR name looks like an ISP's generic name for `ip` (empty: it does not)."""
    addr = ipaddress.ip_address(str(ip)) if isinstance(ip, str) else ip
    name = name.strip().lower().rstrip(".")
    reasons: list[str] = []
    labels = name.split(".")
    tokens = [t for label in labels[:-1] if label for t in _LABEL_SEP.split(label) if t]
    words = sorted({w for t in tokens if (w := t.strip("0123456789")) in GENERIC_WORDS})
    if words:
        reasons.append(f"PTR name {name} looks generic (contains {', '.join(words)})")
    if _built_from_digits(name, addr):
        reasons.append(f"PTR name {name} looks generic (built from the digits of {addr})")
    return reasons


def looks_generic(name: str, address: IPAddress | str) -> bool:
    """True when `generic_reasons` finds a reason."""
    return bool(generic_reasons(name, address))


def _built_from_digits(name: str, addr: IPAddress) -> bool:
    if isinstance(addr, ipaddress.IPv4Address):
        octets = [str(o) for o in addr.packed]
        runs = [str(int(r)) for r in re.findall(r"\d+", name)]
        if sum((Counter(runs) & Counter(octets)).values()) >= 3:
            return True
        pairs = {(octets[2], octets[3]), (octets[3], octets[2])}
        if any((runs[i], runs[i + 1]) in pairs for i in range(len(runs) - 1)) or str(int(addr)) in runs:
            return True
        if addr.packed.hex() in name.replace("-", ""):
            return True
        rev = octets[::-1]
        joined = [sep.join(parts) for parts in (octets, rev) for sep in ("-", ".", "_")]
        padded = ["".join(p.zfill(3) for p in parts) for parts in (octets, rev)]
        return any(form in name for form in [*joined, "".join(octets), *padded])
    hextets = [h.lstrip("0") or "0" for h in addr.exploded.split(":")]
    nonzero = Counter(h for h in hextets if h != "0")
    labels = [t for t in _LABEL_SEP.split(name) if t]
    if sum((Counter(t.lstrip("0") or "0" for t in labels) & nonzero).values()) >= 3:
        return True
    compact = addr.exploded.replace(":", "")
    flat = name.replace("-", "").replace(".", "").replace("_", "")
    return compact[-12:] in flat or compact[-12:][::-1] in flat or compact[16:] in flat
