"""The lab's shape: its address plan, hosts, zones and where its files live. Pure, no I/O.

Every address is an offset into the lab's IPv4 /24 and IPv6 /64 (the network plan in docs/lab.md), so the
whole lab moves with `--network` / `--network6`.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sendfleet.errors import UsageError

DEFAULT_NETWORK = "198.51.100.0/24"
DEFAULT_NETWORK6 = "2001:db8:5f::/64"
#: Networks that carry this machine's own traffic and package registry: never used by the lab.
FORBIDDEN_NETWORKS = ("192.0.2.0/24", "203.0.113.0/24")

# Offsets into the /24 (and the same offsets into the /64).
OFF_BRIDGE = 1
OFF_AUTH_DNS = 2
OFF_RBLDNSD = 3
OFF_RESOLVER = 4
OFF_APT_CACHE = 5
OFF_FIRST_SENDER = 10
MAX_SENDERS = 10
OFF_SINK = 20
OFF_FEEDBACK = 21  # the feedback host: MX of the bounce domains, PostgreSQL with the suppression list
OFF_MONITORING = 22  # Prometheus and Alertmanager
OFF_APP_FIRST, OFF_APP_LAST = 32, 39  # app_networks = the /29 at .32
OFF_OUTSIDER = 40
OFF_CANDIDATE_FIRST, OFF_CANDIDATE_LAST = 64, 127  # the /26 of candidate sending IPs

SENDER_DOMAINS = ("shop.test", "news.test")
#: Recipient domain -> its MX host (every one resolves to the sink). Provider-like names, so that a provider
#: class matches by MX suffix: acme.test is a Google Workspace-like custom domain, contoso.test a Microsoft
#: 365-like one, smallbiz.test belongs to no provider (class other).
RECIPIENT_MX = {
    "gmail.test": "mx1.l.gmail.test",
    "yahoo.test": "mta5.am0.yahoodns.yahoo.test",
    "outlook.test": "outlook-test.mail.protection.outlook.test",
    "acme.test": "mx1.l.gmail.test",
    "contoso.test": "contoso-test.mail.protection.outlook.test",
    "smallbiz.test": "mx.smallbiz.test",
}
RECIPIENT_DOMAINS = tuple(RECIPIENT_MX)
HOST_DOMAIN = "lab.test"
BLOCKLIST_ZONES = ("zen.lab.test", "l2.lab.test", "dbl.lab.test", "origin.asn.lab.test", "asn.lab.test")
TSIG_KEY_NAME = "sendfleet-lab"
TSIG_ALGORITHM = "hmac-sha256"

DEFAULT_STATE_DIR = Path("/var/lib/sendfleet-lab")
DEFAULT_CACHE_DIR = Path("/var/cache/sendfleet-lab")


@dataclass(frozen=True)
class LabHost:
    """One lab machine: a systemd-nspawn Debian host in its own network namespace."""

    name: str
    role: str  # "sender" | "sink" | "feedback" | "monitoring"
    ipv4: str
    ipv6: str

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{HOST_DOMAIN}"

    @property
    def netns(self) -> str:
        return f"sfl-{self.name}"

    @property
    def veth(self) -> str:
        return f"veth-{self.name}"[:15]


@dataclass(frozen=True)
class LabConfig:
    network: str = DEFAULT_NETWORK
    network6: str = DEFAULT_NETWORK6
    senders: int = 3
    bridge: str = "sfl0"
    state_dir: Path = DEFAULT_STATE_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    inventory_dir: Path = field(default_factory=lambda: Path("inventories/lab"))

    def __post_init__(self) -> None:
        net = self.net4
        if net.prefixlen != 24:
            raise UsageError(f"--network {self.network}: the lab needs an IPv4 /24")
        if self.net6.prefixlen != 64:
            raise UsageError(f"--network6 {self.network6}: the lab needs an IPv6 /64")
        for bad in FORBIDDEN_NETWORKS:
            if net.overlaps(ipaddress.ip_network(bad)):
                raise UsageError(
                    f"--network {self.network} overlaps {bad}, which carries this machine's own network; "
                    "choose another range (default 198.51.100.0/24)"
                )
        if not 1 <= self.senders <= MAX_SENDERS:
            raise UsageError(f"--senders {self.senders}: choose 1 to {MAX_SENDERS}")
        if not self.bridge or len(self.bridge) > 15:
            raise UsageError(f"--bridge {self.bridge!r}: an interface name of 1-15 characters")

    # ---- addresses -------------------------------------------------------------------------
    @property
    def net4(self) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(self.network, strict=True)
        except ValueError as err:
            raise UsageError(f"--network {self.network}: {err}") from None

    @property
    def net6(self) -> ipaddress.IPv6Network:
        try:
            return ipaddress.IPv6Network(self.network6, strict=True)
        except ValueError as err:
            raise UsageError(f"--network6 {self.network6}: {err}") from None

    def v4(self, offset: int) -> str:
        return str(self.net4[offset])

    def v6(self, offset: int) -> str:
        return str(self.net6[offset])

    @property
    def bridge_ip(self) -> str:
        return self.v4(OFF_BRIDGE)

    @property
    def auth_dns(self) -> str:
        return self.v4(OFF_AUTH_DNS)

    @property
    def rbldnsd(self) -> str:
        return self.v4(OFF_RBLDNSD)

    @property
    def resolver(self) -> str:
        return self.v4(OFF_RESOLVER)

    @property
    def apt_cache(self) -> str:
        return self.v4(OFF_APT_CACHE)

    @property
    def app_addresses(self) -> list[str]:
        return [self.v4(o) for o in range(OFF_APP_FIRST, OFF_APP_LAST + 1)]

    @property
    def app_network(self) -> str:
        return str(ipaddress.ip_network(f"{self.v4(OFF_APP_FIRST)}/29"))

    @property
    def outsider(self) -> str:
        return self.v4(OFF_OUTSIDER)

    @property
    def candidate_range(self) -> str:
        return str(ipaddress.ip_network(f"{self.v4(OFF_CANDIDATE_FIRST)}/26"))

    def bridge_addresses(self) -> list[tuple[str, int]]:
        """Every address the machine itself holds on the bridge, with its prefix length."""
        offsets = [OFF_BRIDGE, OFF_AUTH_DNS, OFF_RBLDNSD, OFF_RESOLVER, OFF_APT_CACHE]
        offsets += [*range(OFF_APP_FIRST, OFF_APP_LAST + 1), OFF_OUTSIDER]
        out = [(self.v4(o), 24 if o == OFF_BRIDGE else 32) for o in offsets]
        out += [(self.v6(o), 64 if o == OFF_BRIDGE else 128) for o in offsets[:5]]
        return out

    # ---- hosts -----------------------------------------------------------------------------
    @property
    def hosts(self) -> list[LabHost]:
        out = [
            LabHost(f"mta{i + 1}", "sender", self.v4(OFF_FIRST_SENDER + i), self.v6(OFF_FIRST_SENDER + i))
            for i in range(self.senders)
        ]
        out.append(LabHost("sink", "sink", self.v4(OFF_SINK), self.v6(OFF_SINK)))
        out.append(LabHost("fb", "feedback", self.v4(OFF_FEEDBACK), self.v6(OFF_FEEDBACK)))
        out.append(LabHost("mon", "monitoring", self.v4(OFF_MONITORING), self.v6(OFF_MONITORING)))
        return out

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name or host.fqdn == name:
                return host
        names = ", ".join(h.name for h in self.hosts)
        raise UsageError(f"no lab host named {name!r} (hosts: {names})")

    # ---- zones -----------------------------------------------------------------------------
    @property
    def reverse_zone(self) -> str:
        return ipaddress.ip_address(self.v4(0)).reverse_pointer.split(".", 1)[1]

    @property
    def reverse_zone6(self) -> str:
        nibbles = ipaddress.ip_address(self.v6(0)).reverse_pointer.split(".")
        return ".".join(nibbles[16:])  # drop the 16 host nibbles of the /64

    @property
    def authoritative_zones(self) -> list[str]:
        return [HOST_DOMAIN, *SENDER_DOMAINS, *RECIPIENT_DOMAINS, self.reverse_zone, self.reverse_zone6]

    # ---- files -----------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        return self.cache_dir / "images"

    @property
    def apt_cache_dir(self) -> Path:
        return self.cache_dir / "apt-cacher-ng"

    def host_dir(self, host: LabHost) -> Path:
        return self.state_dir / "hosts" / host.name

    def host_root(self, host: LabHost) -> Path:
        return self.host_dir(host) / "root"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["cache_dir"] = str(self.cache_dir)
        data["inventory_dir"] = str(self.inventory_dir)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LabConfig:
        data = json.loads(text)
        return cls(
            network=data["network"],
            network6=data["network6"],
            senders=int(data["senders"]),
            bridge=data["bridge"],
            state_dir=Path(data["state_dir"]),
            cache_dir=Path(data["cache_dir"]),
            inventory_dir=Path(data["inventory_dir"]),
        )
