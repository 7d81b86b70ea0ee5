"""Which resolver to ask, and whether it is one the lists refuse. Pure."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sendfleet.errors import UsageError

#: Well-known public resolvers. Spamhaus answers them with 127.255.255.254 (or NXDOMAIN, which looks clean).
PUBLIC_RESOLVERS: dict[str, str] = {
    "8.8.8.8": "Google Public DNS",
    "8.8.4.4": "Google Public DNS",
    "2001:4860:4860::8888": "Google Public DNS",
    "2001:4860:4860::8844": "Google Public DNS",
    "1.1.1.1": "Cloudflare",
    "1.0.0.1": "Cloudflare",
    "2606:4700:4700::1111": "Cloudflare",
    "2606:4700:4700::1001": "Cloudflare",
    "9.9.9.9": "Quad9",
    "149.112.112.112": "Quad9",
    "2620:fe::fe": "Quad9",
    "2620:fe::9": "Quad9",
    "208.67.222.222": "OpenDNS",
    "208.67.220.220": "OpenDNS",
    "2620:119:35::35": "OpenDNS",
    "2620:119:53::53": "OpenDNS",
    "64.6.64.6": "Verisign",
    "64.6.65.6": "Verisign",
    "94.140.14.14": "AdGuard",
    "94.140.15.15": "AdGuard",
    "185.228.168.9": "CleanBrowsing",
    "76.76.2.0": "Control D",
    "8.26.56.26": "Comodo",
    "77.88.8.8": "Yandex",
    "4.2.2.1": "Level3",
    "4.2.2.2": "Level3",
}


@dataclass(frozen=True)
class Resolver:
    address: str
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}" if self.port != 53 else self.address

    @property
    def public_name(self) -> str | None:
        return PUBLIC_RESOLVERS.get(self.address)


def parse_resolver(text: str) -> Resolver:
    """`ADDR`, `ADDR:PORT`, `IPV6`, `[IPV6]:PORT` or `[IPV6]`."""
    raw = text.strip()
    where = f"--resolver {raw!r}"
    port_text: str | None = None
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", raw)
    if match:
        host, port_text = match.group(1), match.group(2)
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    else:
        host = raw
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"{where}: not an IP address (ADDR[:PORT], IPv6 as [ADDR]:PORT)") from None
    port = 53
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"{where}: port must be 1-65535")
        port = int(port_text)
    return Resolver(str(addr), port)


def resolv_conf_nameservers(text: str) -> list[Resolver]:
    """The `nameserver` lines of a resolv.conf (zone ids and bad lines are skipped)."""
    out: list[Resolver] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            host = parts[1].split("%", 1)[0]
            try:
                out.append(Resolver(str(ipaddress.ip_address(host))))
            except ValueError:
                continue
    return out


def public_resolver_warnings(resolvers: Iterable[Resolver]) -> list[str]:
    return [
        f"resolver {r} is a public resolver ({r.public_name}): lists such as Spamhaus refuse its queries "
        "(127.255.255.254) or answer NXDOMAIN, which would look clean; use your own recursive resolver"
        for r in resolvers
        if r.public_name is not None
    ]
