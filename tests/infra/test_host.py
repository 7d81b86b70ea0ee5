"""The host under the MTA: packages, services, time sync, listening sockets, firewall, secrets, addresses."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest

from tests.infra.conftest import Expect


def test_packages_installed(host: Any, expect: Expect) -> None:
    time_sync = expect.var("base", "base_time_sync")
    wanted = ["postfix", "opendkim", *expect.var("base", "base_packages")]
    if time_sync != "none":
        wanted.append(time_sync)
    missing = [p for p in wanted if not host.package(p).is_installed]
    assert not missing, f"{expect.name}: packages not installed: {', '.join(missing)} (expected: {', '.join(wanted)})"


def test_services_enabled_and_running(host: Any, expect: Expect) -> None:
    problems = []
    services = ["postfix", "opendkim"] + (["nftables"] if expect.var("base", "base_nftables") else [])
    for name in services:
        svc = host.service(name)
        if not svc.is_enabled:
            problems.append(f"{name} is not enabled (expected enabled)")
        if not svc.is_running:
            problems.append(f"{name} is not running (expected running)")
    # Debian's postfix.service is a oneshot umbrella that stays "active (exited)"; the MTA runs as postfix@-.
    if host.run("systemctl cat postfix@-.service").rc == 0:
        state = host.run("systemctl show -p SubState --value postfix@-.service").stdout.strip()
        if state != "running":
            problems.append(f"postfix@- (the Postfix master) is {state or 'unknown'} (expected running)")
    assert not problems, f"{expect.name}: " + "; ".join(problems)


def _in_container(host: Any) -> bool:
    return bool(host.run("systemd-detect-virt --container --quiet").rc == 0)


def test_time_sync(host: Any, expect: Expect) -> None:
    """As the base role configures it: the chosen daemon enabled; running unless the host is a container
    (systemd-timesyncd and chrony skip themselves where the clock cannot be set)."""
    kind = expect.var("base", "base_time_sync")
    if kind == "none":
        return
    unit = {"systemd-timesyncd": "systemd-timesyncd", "chrony": "chrony"}[kind]
    svc = host.service(unit)
    assert svc.is_enabled, f"{expect.name}: time sync {unit} is not enabled (expected enabled: base_time_sync={kind})"
    must_run = expect.host.vars.get("base_time_sync_running")
    if must_run is None:
        must_run = not _in_container(host)
    if must_run:
        assert svc.is_running, f"{expect.name}: time sync {unit} is not running (expected running)"
    if kind == "systemd-timesyncd":
        conf = host.file("/etc/systemd/timesyncd.conf.d/50-sendfleet.conf")
        assert conf.exists, f"{expect.name}: {conf.path} missing (written by the base role)"


def _listeners(host: Any) -> list[tuple[str, str, int, str]]:
    """(proto, address, port, process) of every listening TCP socket and bound UDP socket."""
    out = host.check_output("ss -Hlntup")
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        proto, local = cols[0], cols[4]
        addr, _, port = local.rpartition(":")
        addr = addr.strip("[]").split("%")[0]
        proc = ""
        if "users:((" in line:
            proc = line.split('users:(("', 1)[1].split('"', 1)[0]
        found.append((proto, addr, int(port), proc))
    return found


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return addr in ("localhost",)


def test_listening_sockets_are_designed(host: Any, expect: Expect) -> None:
    """Reachable from the network: SSH (base_ssh_port), Postfix's SMTP ports (base_smtp_ports) and, when the
    dnsbl_monitor role runs it, the node exporter (base_monitoring_port: the firewall opens it to the monitoring
    hosts only), nothing else."""
    ssh_port = int(expect.var("base", "base_ssh_port"))
    smtp_ports = {int(p) for p in expect.var("base", "base_smtp_ports")}
    postfix = {"master", "smtpd"}  # the master listens; an smtpd child holds the same socket
    designed = {("tcp", ssh_port): {"sshd"}, **{("tcp", p): postfix for p in smtp_ports}}
    if str(expect.var("dnsbl_monitor", "dnsbl_monitor_node_exporter")).lower() in ("true", "yes", "1"):
        # ss names the process by its first 15 characters
        designed[("tcp", int(expect.var("base", "base_monitoring_port")))] = {"prometheus-node", "node_exporter"}
    unexpected = []
    for proto, addr, port, proc in _listeners(host):
        if _loopback(addr):
            continue
        allowed = designed.get((proto, port))
        if allowed is None or (proc and proc not in allowed):
            unexpected.append(f"{proto} {addr}:{port} ({proc or 'unknown process'})")
    assert not unexpected, (
        f"{expect.name}: listening sockets beyond the design (tcp {ssh_port} sshd, tcp "
        f"{', '.join(map(str, sorted(smtp_ports)))} postfix): {'; '.join(unexpected)}"
    )
    smtp = [(a, p) for proto, a, p, proc in _listeners(host) if proto == "tcp" and p == 25 and proc in postfix]
    assert smtp, f"{expect.name}: postfix does not listen on tcp 25 (expected: all addresses)"


def test_sending_ips_on_interface(host: Any, expect: Expect) -> None:
    present = set()
    for line in host.check_output("ip -o addr show").splitlines():
        cols = line.split()
        if len(cols) > 3 and cols[2] in ("inet", "inet6"):
            present.add(str(ipaddress.ip_interface(cols[3]).ip))
    missing = [f"{s.ip} (pool {s.pool})" for s in expect.sending_ips if str(s.ip) not in present]
    assert not missing, f"{expect.name}: sending IPs not configured on any interface: {', '.join(missing)}"


def _nft_sets(ruleset: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    chains, sets = [], {}
    for item in ruleset.get("nftables", []):
        if "chain" in item:
            chains.append(item["chain"])
        if "set" in item:
            s = item["set"]
            members = []
            for elem in s.get("elem", []):
                if isinstance(elem, dict) and "prefix" in elem:
                    members.append(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")
                elif isinstance(elem, dict) and "range" in elem:
                    members.append("-".join(map(str, elem["range"])))
                else:
                    members.append(str(elem))
            sets[f"{s['family']} {s['table']} {s['name']}"] = members
    return chains, sets


def _covered(net: str, members: list[str]) -> bool:
    want = ipaddress.ip_network(net, strict=False)
    for m in members:
        try:
            have = ipaddress.ip_network(m, strict=False)
        except ValueError:
            continue
        if have.version == want.version and want.subnet_of(have):  # type: ignore[arg-type]
            return True
    return False


def test_nftables_rules(host: Any, expect: Expect) -> None:
    """Inbound default drop; SSH allowed from the admin networks, SMTP from the app networks."""
    if not expect.var("base", "base_nftables"):
        pytest.skip(f"{expect.name}: base_nftables is false in the inventory: sendfleet does not manage its firewall")
    res = host.run("nft -j list ruleset")
    assert res.rc == 0, (
        f"{expect.name}: cannot read the nftables ruleset ({res.stderr.strip()}); expected the base role's "
        "firewall (inbound default drop)"
    )
    ruleset = json.loads(res.stdout)
    chains, sets = _nft_sets(ruleset)
    inputs = [c for c in chains if c.get("hook") == "input"]
    assert any(c.get("policy") == "drop" for c in inputs), (
        f"{expect.name}: no input chain with policy drop (input chains: "
        + (", ".join(f"{c.get('table')}/{c.get('name')} policy {c.get('policy')}" for c in inputs) or "none")
        + ")"
    )
    rules = host.check_output("nft list ruleset")
    allowed = _accepting_sets(rules)
    by_name = {key.split()[-1]: members for key, members in sets.items()}
    ssh_port = int(expect.var("base", "base_ssh_port"))
    smtp_ports = {int(p) for p in expect.var("base", "base_smtp_ports")}
    problems = []
    for kind, nets, ports in (("admin", expect.admin_networks, {ssh_port}), ("app", expect.app_networks, smtp_ports)):
        for net in nets:
            for port in sorted(ports):
                if not any(_covered(net, by_name.get(name, [])) for name in allowed.get(port, set())):
                    problems.append(f"{kind} network {net} is not accepted on tcp {port}")
    assert not problems, f"{expect.name}: " + "; ".join(problems) + " (expected by the base role's firewall)"


_ACCEPT = re.compile(r"tcp dport (\{[^}]*\}|\d+) ip6? saddr @(\w+) accept")


def _accepting_sets(rules: str) -> dict[int, set[str]]:
    """Port -> names of the address sets an `accept` rule admits on it (from `nft list ruleset`)."""
    out: dict[int, set[str]] = {}
    for ports, name in _ACCEPT.findall(rules):
        for port in re.findall(r"\d+", ports):
            out.setdefault(int(port), set()).add(name)
    return out


def test_no_world_readable_secret(host: Any, expect: Expect) -> None:
    """No private key or password file readable by everyone (DKIM keys, TLS keys, SASL maps)."""
    keys_dir = expect.var("opendkim", "opendkim_host_keys_dir")
    where = f"{keys_dir} /etc/ssl/private /etc/postfix /etc/opendkim /etc/sendfleet"
    cmd = (
        f"find {where} -xdev -type f -perm -o=r "
        r"\( -name '*.private' -o -name '*.key' -o -name '*sasl_passwd*' \) -print 2>/dev/null; "
        f"find {where} -xdev -type f -perm -o=r -name '*.pem' -exec grep -l 'PRIVATE KEY' {{}} + 2>/dev/null; true"
    )
    readable = sorted({p.strip() for p in host.check_output(cmd).splitlines() if p.strip()})
    assert not readable, f"{expect.name}: secret files readable by everyone (expected mode without o+r): {readable}"
