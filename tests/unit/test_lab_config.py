"""The lab's address plan and server files: pure, no root."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sendfleet.errors import UsageError
from sendfleet.lab import zonedata
from sendfleet.lab.config import RECIPIENT_MX, LabConfig


def test_default_plan_matches_design() -> None:
    cfg = LabConfig()
    assert cfg.bridge_ip == "198.51.100.1"
    assert (cfg.auth_dns, cfg.rbldnsd, cfg.resolver, cfg.apt_cache) == (
        "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5")
    assert [(h.name, h.ipv4) for h in cfg.hosts] == [
        ("mta1", "198.51.100.10"), ("mta2", "198.51.100.11"), ("mta3", "198.51.100.12"), ("sink", "198.51.100.20"),
        ("fb", "198.51.100.21"), ("mon", "198.51.100.22")]
    assert cfg.candidate_range == "198.51.100.64/26"
    assert cfg.app_network == "198.51.100.32/29" and cfg.outsider == "198.51.100.40"
    assert cfg.reverse_zone == "100.51.198.in-addr.arpa"
    assert cfg.reverse_zone6 == "0.0.0.0.f.5.0.0.8.b.d.0.1.0.0.2.ip6.arpa"  # the /64 2001:db8:5f:0::


@pytest.mark.parametrize("network", ["192.0.2.0/24", "203.0.113.0/24"])
def test_machine_networks_are_refused(network: str) -> None:
    with pytest.raises(UsageError, match="this machine's own network"):
        LabConfig(network=network)


@pytest.mark.parametrize("kwargs, match", [
    ({"network": "198.51.100.0/25"}, "IPv4 /24"),
    ({"network": "198.51.100.7/24"}, "host bits"),
    ({"network6": "2001:db8:5f::/48"}, "IPv6 /64"),
    ({"senders": 0}, "choose 1 to 10"),
    ({"senders": 11}, "choose 1 to 10"),
    ({"bridge": "a-very-long-bridge-name"}, "1-15 characters"),
])
def test_bad_shapes_are_one_line_usage_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match) as err:
        LabConfig(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_config_round_trips_through_state_file() -> None:
    cfg = LabConfig(senders=7, inventory_dir=Path("/tmp/inv"))
    assert LabConfig.from_json(cfg.to_json()) == cfg


def test_every_host_and_service_has_forward_and_reverse_records() -> None:
    cfg = LabConfig()
    zones = zonedata.zone_files(cfg, serial=1)
    assert set(zones) == set(cfg.authoritative_zones)
    for host in cfg.hosts:
        assert f"{host.name} A {host.ipv4}" in zones["lab.test"]
        assert f"{ipaddress.ip_address(host.ipv4).reverse_pointer}. PTR {host.fqdn}." in zones[cfg.reverse_zone]
        assert f"{ipaddress.ip_address(host.ipv6).reverse_pointer}. PTR {host.fqdn}." in zones[cfg.reverse_zone6]
    sink = cfg.host("sink")
    for domain, mx in RECIPIENT_MX.items():  # provider-like MX names, each on the sink
        assert f"@ MX 10 {mx}." in zones[domain]
        assert f"{mx}. A {sink.ipv4}" in zones[zonedata.mx_zone(mx)]
        assert f"{mx}. AAAA {sink.ipv6}" in zones[zonedata.mx_zone(mx)]
    assert zonedata.mx_zone("contoso-test.mail.protection.outlook.test") == "outlook.test"
    for candidate in ("198.51.100.64", "198.51.100.100"):  # no PTR until `dns apply` publishes one
        assert ipaddress.ip_address(candidate).reverse_pointer not in zones[cfg.reverse_zone]


def test_blocklist_seed_has_the_cases_vetting_must_reject() -> None:
    data = zonedata.rbldnsd_data(LabConfig())
    zen = data["zen4"]
    assert "127.0.0.2 :127.0.0.2:" in zen  # RFC 5782 test entry
    assert "198.51.100.66 :127.0.0.2:" in zen and "198.51.100.68 :127.255.255.254:" in zen
    poor = [ln for ln in zen.splitlines() if ln.startswith("198.18.7.")]
    assert len(poor) / 256 > 0.05
    assert "198.51.100.120/29" in data["l2"]
    assert "::ffff:7f00:2/128" in data["zen6"]


def test_unbound_refuses_everything_but_lab_zones() -> None:
    conf = zonedata.unbound_conf(LabConfig(), Path("/run/x"))
    assert 'local-zone: "." refuse' in conf
    assert 'local-zone: "lab.test." transparent' in conf and 'name: "zen.lab.test."' in conf
