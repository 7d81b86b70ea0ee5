"""Fixtures of the infra suite: expected state from the INVENTORY, never from literals.

Runs against any inventory (lab or production):

    pytest tests/infra --hosts='ansible://senders' --ansible-inventory=inventories/NAME

testinfra gives one `host` per matched inventory host; `expect` is what that host must look like, built
from the shared inventory loader (`sendfleet.inventory_io.load_inventory`, the same model the DNS planner
and readiness read) and, for a role variable the inventory does not set, the role's literal default
(roles/<role>/defaults/main.yml). Which sending IPs must be in service is decided here, independently of
the `sending_ips` role: an IP whose FCrDNS fails (looked up from this machine through the inventory's
`dns_resolver`) must not have a transport, unless the inventory says `rdns_gate: warn`.

Nothing here depends on tests/lab: no lab fixture, no lab address.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from sendfleet.core.inventory import Host, Inventory, SenderDomain, SendingIp
from sendfleet.inventory_io import load_inventory
from sendfleet.readiness.evidence import DnsError, DnsView

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"

# testinfra's ansible backend runs `ansible-inventory`: find it beside this Python (the venv) when the
# caller did not put the venv on PATH.
if shutil.which("ansible-inventory") is None:
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


# ------------------------------------------------------------------------------------ role defaults

_defaults_cache: dict[str, dict[str, Any]] = {}


def role_default(role: str, name: str) -> Any:
    """The literal default of a role variable (a templated default is not evaluated: fails loudly)."""
    if role not in _defaults_cache:
        path = ROLES / role / "defaults" / "main.yml"
        _defaults_cache[role] = dict(YAML(typ="safe").load(path.read_text()) or {}) if path.is_file() else {}
    value = _defaults_cache[role].get(name)
    if isinstance(value, str) and "{{" in value:
        raise AssertionError(
            f"roles/{role}/defaults/main.yml: {name} is a template; set {name} in the inventory to test it"
        )
    return value


# --------------------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Fcrdns:
    ip: str
    ok: bool
    detail: str


def fcrdns(view: DnsView, sip: SendingIp) -> Fcrdns:
    """Forward-confirmed reverse DNS of one sending IP, as the world sees it (through the resolver)."""
    ip = str(sip.ip)
    try:
        names = view.ptr(ip)
        if not names:
            return Fcrdns(ip, False, f"{ip} has no PTR (expected {sip.ptr})")
        if len(names) > 1:
            return Fcrdns(ip, False, f"{ip} has {len(names)} PTRs {', '.join(names)} (expected only {sip.ptr})")
        back = view.addresses(names[0])
    except DnsError as err:
        return Fcrdns(ip, False, f"{ip}: DNS error {err}")
    if ip not in back:
        return Fcrdns(ip, False, f"PTR {ip} -> {names[0]} but {names[0]} -> {', '.join(back) or 'nothing'}")
    if names[0] != sip.ptr:
        return Fcrdns(ip, False, f"PTR {ip} -> {names[0]}, expected {sip.ptr}")
    return Fcrdns(ip, True, f"{ip} -> {names[0]} -> {ip}")


# ---------------------------------------------------------------------------------- expectations


@dataclass
class Expect:
    """What one sender host must look like, from the inventory."""

    name: str
    host: Host
    inv: Inventory
    gate: dict[str, Fcrdns] = field(default_factory=dict)

    def var(self, role: str, name: str) -> Any:
        """The inventory's value of a role variable, else the role's literal default."""
        if name in self.host.vars:
            return self.host.vars[name]
        return role_default(role, name)

    @property
    def sending_ips(self) -> list[SendingIp]:
        return list(self.host.sending_ips)

    @property
    def in_service(self) -> list[SendingIp]:
        """The IPs that must have a transport: those passing FCrDNS (all of them when rdns_gate: warn)."""
        if self.inv.rdns_gate == "warn":
            return self.sending_ips
        return [s for s in self.sending_ips if self.gate[str(s.ip)].ok]

    @property
    def fqdn(self) -> str:
        if "base_fqdn" in self.host.vars:
            return str(self.host.vars["base_fqdn"])
        if "." in self.name:
            return self.name
        domain = self.host.vars.get("base_domain") or self.host.vars.get("host_domain")
        assert domain, f"{self.name}: neither base_fqdn nor host_domain in the inventory: cannot expect a FQDN"
        return f"{self.name}.{domain}"

    def domains_here(self) -> list[SenderDomain]:
        """Sender domains whose pool has an in-service IP on this host."""
        pools = {s.pool for s in self.in_service}
        return [d for d in self.inv.sender_domains.values() if d.pool in pools]

    @property
    def app_networks(self) -> list[str]:
        return [str(n) for n in self.inv.app_networks]

    @property
    def admin_networks(self) -> list[str]:
        return [str(n) for n in self.inv.admin_networks]


@pytest.fixture(scope="session")
def inventory(pytestconfig: pytest.Config) -> Inventory:
    path = pytestconfig.getoption("ansible_inventory", None)
    if not path:
        pytest.fail("run the infra suite with --ansible-inventory=inventories/NAME (see tests/infra/README.md)")
    return load_inventory(Path(path))


@pytest.fixture(scope="session")
def dnsview(inventory: Inventory) -> DnsView:
    return DnsView(inventory.resolver)


@pytest.fixture(scope="session")
def gate(inventory: Inventory, dnsview: DnsView) -> dict[str, Fcrdns]:
    return {str(s.ip): fcrdns(dnsview, s) for s in inventory.sending_ips()}


def host_name(host: Any) -> str:
    backend = host.backend
    return str(getattr(backend, "host", None) or backend.get_hostname())


@pytest.fixture
def expect(host: Any, inventory: Inventory, gate: dict[str, Fcrdns]) -> Expect:
    name = host_name(host)
    if name not in inventory.hosts:
        pytest.fail(f"{name}: not in the inventory {inventory.path} as sendfleet reads it")
    return Expect(name, inventory.hosts[name], inventory, gate)


# ------------------------------------------------------------------------------------- helpers


def postconf(host: Any, *params: str) -> dict[str, str]:
    """`postconf -h`-style values of main.cf parameters (effective values, defaults included)."""
    out = host.check_output("postconf " + " ".join(params))
    values: dict[str, str] = {}
    for line in out.splitlines():
        if " = " in line:
            k, v = line.split(" = ", 1)
            values[k.strip()] = v.strip()
        elif line.endswith(" ="):
            values[line[:-2].strip()] = ""
    return values


def master_overrides(host: Any) -> dict[str, dict[str, str]]:
    """master.cf `-o` overrides per service/type: {"sf_x/unix": {"smtp_bind_address": "..."}}."""
    out = host.check_output("postconf -P")
    services: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        if " = " not in line:
            continue
        key, value = line.split(" = ", 1)
        parts = key.strip().split("/")
        if len(parts) != 3:
            continue
        services.setdefault(f"{parts[0]}/{parts[1]}", {})[parts[2]] = value.strip()
    return services


def transports_by_ip(host: Any) -> dict[str, str]:
    """Bound source address -> the IP's own master.cf service (transport) binding to it: the shortest name among
    those binding to it (its per-provider-class transports, `<own>_<class>`, bind to it too)."""
    out: dict[str, str] = {}
    for service, opts in master_overrides(host).items():
        name = service.split("/")[0]
        for key in ("smtp_bind_address", "smtp_bind_address6"):
            if opts.get(key):
                ip = str(ipaddress.ip_address(opts[key]))
                if ip not in out or len(name) < len(out[ip]):
                    out[ip] = name
    return out


def master_maxproc(host: Any) -> dict[str, str]:
    """master.cf service name -> its maxproc field (`postconf -M`)."""
    out: dict[str, str] = {}
    for line in host.check_output("postconf -M").splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "unix":
            out[fields[0]] = fields[6]
    return out


def failures(items: list[str], header: str) -> Iterator[str]:
    if items:
        yield header + "\n  - " + "\n  - ".join(items)
