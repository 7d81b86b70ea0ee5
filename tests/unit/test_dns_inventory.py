"""The inventory loader and model (no network)."""

from __future__ import annotations

import ipaddress
import json
from datetime import date
from pathlib import Path

import pytest

from sendfleet.core.inventory import zone_for
from sendfleet.errors import InventoryError, UsageError
from sendfleet.inventory_io import load_inventory, read_dkim_keys

REPO = Path(__file__).resolve().parents[2]


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {
    "hosts.yml": "all:\n  vars:\n    dns_ttl: 600\n    host_domain: lab.test\n  children:\n    senders:\n      hosts:\n"
    "        mta1:\n        mta2:\n"
    "          sending_ips: [{ip: 198.51.100.90, pool: marketing, ptr: o90.mta2.lab.test}]\n",
    "group_vars/all/pools.yml": """pools: {transactional: {}, marketing: {spf_domain: _spf-mk.lab.test}}
sender_domains:
  Shop.Test.: {pool: transactional, selectors: [s2026a, S2026B], dmarc: {p: reject, adkim: s}}
  news.test: {pool: marketing, selectors: s1, dmarc: false, tls_rpt: {rua: tls@news.test}}
vetted_ips:
  transactional: [{ip: 198.51.100.70, vetted: 2026-11-27, zones: [zen.lab.test]}, {ip: '2001:db8:5f::70'}]
  marketing: [{ip: 198.51.100.90}]
app_networks: [198.51.100.32/29]
admin_networks: [198.51.100.0/28]
""",
    "group_vars/all/dns.yml": "dns_zones: [lab.test, shop.test, 100.51.198.in-addr.arpa]\n"
    "dns_update_server: 198.51.100.2\ndns_tsig_key_name: k\ndns_tsig_secret: c2VjcmV0\ndns_resolver: 198.51.100.4\n",
    "group_vars/senders.yml": "rdns_gate: warn\n",
    "host_vars/mta1.yml": "sending_ips:\n  - {ip: 198.51.100.70, pool: transactional, ptr: O70.mta1.lab.test., "
    "warmup_start: 2026-11-27}\n"
    "  - {ip: '2001:db8:5f::70', pool: transactional, ptr: o70.mta1.lab.test, helo: x.lab.test}\n",
}


def test_loads_the_layout(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, BASE))
    assert list(inv.hosts) == ["mta1", "mta2"]
    assert inv.hosts["mta1"].groups == ("senders",)
    ips = inv.sending_ips()
    assert [str(s.ip) for s in ips] == ["198.51.100.70", "2001:db8:5f::70", "198.51.100.90"]
    first = ips[0]
    assert (first.pool, first.ptr, first.helo, first.host) == (
        "transactional",
        "o70.mta1.lab.test",
        "o70.mta1.lab.test",
        "mta1",
    )
    assert first.warmup_start == date(2026, 11, 27) and first.source == "host_vars/mta1.yml"
    assert ips[1].helo == "x.lab.test" and ips[1].warmup_start is None
    assert [s.ip for s in inv.pool_ips("marketing")] == [ipaddress.ip_address("198.51.100.90")]
    shop = inv.sender_domains["shop.test"]
    assert shop.selectors == ("s2026a", "s2026b")
    assert (
        shop.dmarc is not None
        and shop.dmarc.record() == "v=DMARC1; p=reject; rua=mailto:dmarc@shop.test; adkim=s; aspf=r"
    )
    news = inv.sender_domains["news.test"]
    assert news.dmarc is None and news.selectors == ("s1",)
    assert news.tls_rpt is not None and news.tls_rpt.record() == "v=TLSRPTv1; rua=mailto:tls@news.test"
    assert inv.pools["marketing"].spf_domain == "_spf-mk.lab.test"
    assert inv.dns_ttl == 600
    assert inv.dns_update is not None and inv.dns_update.key is not None
    assert inv.dns_update.port == 53 and inv.dns_update.key.algorithm == "hmac-sha256"
    assert "c2VjcmV0" not in repr(inv.dns_update)
    assert inv.resolver.nameservers == ("198.51.100.4",)
    assert inv.rdns_gate == "enforce"  # group_vars/senders.yml is not global
    assert inv.hosts["mta1"].vars["rdns_gate"] == "warn"
    assert inv.dkim_dir == tmp_path.resolve() / "dkim"
    assert inv.vetted_ips["transactional"][0].evidence["zones"] == ["zen.lab.test"]
    assert inv.find_ip("198.51.100.90") is ips[2]


def test_dkim_keys_are_read_from_the_controller_dir(tmp_path: Path) -> None:
    write(tmp_path, {**BASE, "dkim/shop.test/s2026a.pem": "PEM"})
    keys = read_dkim_keys(load_inventory(tmp_path))
    assert keys == {("shop.test", "s2026a"): b"PEM", ("shop.test", "s2026b"): None, ("news.test", "s1"): None}


def test_defaults_and_the_example_inventory() -> None:
    inv = load_inventory(REPO / "inventories/example")
    assert inv.rdns_gate == "enforce" and inv.dns_update is None and inv.dns_zones == ()
    assert inv.resolver.nameservers == () and inv.dns_ttl == 3600
    assert {s.weight for s in inv.sending_ips()} == {1, 2}
    example = inv.sender_domains["example.com"]
    assert example.all_selectors == ("s2026a", "e2026a") and example.ed25519_signer == "e2026a"
    assert (example.key_type("s2026a"), example.key_type("e2026a")) == ("rsa", "ed25519")
    assert inv.sender_domains["news.example.com"].ed25519_signer is None
    # a feedback host: the bounce domains' MX, and the DMARC reports it reads (no rua written in the example)
    assert inv.feedback_mx == ("fb1.example.net",)
    assert inv.bounce_domains == {"bounces.example.com": "example.com", "bounces.news.example.com": "news.example.com"}
    assert example.dmarc is not None and example.dmarc.rua == ("mailto:dmarc@bounces.example.com",)
    assert {h.name for h in inv.hosts.values() if "monitoring" in h.groups} == {"mon1.example.net"}


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        (
            "host_vars/mta1.yml",
            "sending_ips: [{ip: 198.51.100.70, pool: bulk, ptr: a.lab.test}]",
            "host_vars/mta1.yml: sending_ips[0].pool: unknown pool 'bulk'",
        ),
        (
            "host_vars/mta1.yml",
            "sending_ips: [{ip: 198.51.100.700, pool: marketing, ptr: a.lab.test}]",
            "host_vars/mta1.yml: sending_ips[0].ip: '198.51.100.700' is not an IP address",
        ),
        (
            "host_vars/mta1.yml",
            "sending_ips: [{ip: 198.51.100.71, pool: marketing}]",
            "host_vars/mta1.yml: sending_ips[0].ptr: missing",
        ),
        (
            "host_vars/mta1.yml",
            "sending_ips: [{ip: 198.51.100.90, pool: marketing, ptr: a.lab.test}]",
            "hosts.yml (host mta2): sending_ips: 198.51.100.90 is also assigned to host mta1 (host_vars/mta1.yml)",
        ),
        (
            "host_vars/mta1.yml",
            "sending_ips: [{ip: 198.51.100.71, pool: marketing, ptr: 'bad_name.lab.test'}]",
            "sending_ips[0].ptr: 'bad_name.lab.test' is not a fully qualified name",
        ),
        ("group_vars/all/x.yml", "rdns_gate: maybe", "group_vars/all/x.yml: rdns_gate: 'maybe' is not one of"),
        ("group_vars/all/x.yml", "dns_tsig_secret: '***'", "group_vars/all/x.yml: dns_tsig_secret: not valid base64"),
        ("group_vars/all/x.yml", "dns_zones: lab.test", "group_vars/all/x.yml: dns_zones: expected a list"),
        (
            "group_vars/all/x.yml",
            "dns_resolver: resolver.lab.test",
            "dns_resolver[0]: 'resolver.lab.test' is not an IP",
        ),
        (
            "group_vars/all/x.yml",
            "dns_ttl: '{{ ttl }}'",
            "group_vars/all/x.yml: dns_ttl: Ansible cannot evaluate it on the controller: 'ttl' is undefined",
        ),
        (
            "group_vars/all/x.yml",
            "dns_tsig_secret: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  3030\n",
            "group_vars/all/x.yml: dns_tsig_secret: encrypted with ansible-vault and no vault secret given",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: {a: {}}\nsender_domains: {x.test: {pool: a, selectors: ['bad sel']}}",
            "group_vars/all/pools.yml: sender_domains.x.test.selectors[0]: 'bad sel' is not a valid DKIM selector",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: {a: {}}\nsender_domains: {x.test: {pool: a, selectors: [s1], dmarc: {p: block}}}",
            "sender_domains.x.test.dmarc.p: 'block' is not one of none, quarantine, reject",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: {a: {}}\nsender_domains: {x.test: {pool: a, selector: [s1]}}",
            "sender_domains.x.test.selector: unknown setting",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: {a: {}}\nsender_domains: {x.test: {selectors: [s1]}}",
            "sender_domains.x.test.pool: missing",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: [a]\nsender_domains: {x.test: {pool: a, selectors: [s1], ed25519_selectors: [s1]}}",
            "sender_domains.x.test.ed25519_selectors[0]: selector 's1' is listed twice",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: [a]\nsender_domains: {x.test: {pool: a, selectors: [s1], ed25519_selectors: [e1],"
            " ed25519_signing_selector: s1}}",
            "ed25519_signing_selector: 's1' is not one of its ed25519_selectors",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: [a]\nsender_domains: {x.test: {pool: a, selectors: [s1], ed25519_selectors: [-bad]}}",
            "ed25519_selectors[0]: '-bad' is not a valid DKIM selector",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: [a]\nsender_domains: {x.test: {pool: a, selectors: [s1], signing_selector: s2}}",
            "signing_selector: 's2' is not one of its selectors",
        ),
        (
            "group_vars/all/pools.yml",
            "pools: {a: {}}\nsender_domains: {x.test: {pool: a, selectors: [s1], dmarc: {rua: 'ftp://x'}}}",
            "dmarc.rua[0]: 'ftp://x' is not a mailto: or https: URI",
        ),
        ("group_vars/all/pools.yml", "pools: {a: {}\n", "group_vars/all/pools.yml:3:1: YAML parsing failed"),
    ],
)
def test_bad_inventory_names_file_and_key(tmp_path: Path, path: str, text: str, message: str) -> None:
    files = dict(BASE)
    if path == "group_vars/all/pools.yml":
        files["host_vars/mta1.yml"] = "{}\n"
        files["hosts.yml"] = "all:\n  children:\n    senders:\n      hosts:\n        mta1:\n"
    files[path] = text + "\n"
    with pytest.raises(UsageError) as err:
        load_inventory(write(tmp_path, files))
    assert message in str(err.value)


def test_rdns_gate_off_and_yaml11_false(tmp_path: Path) -> None:
    write(tmp_path, {**BASE, "group_vars/all/x.yml": "rdns_gate: false\n"})
    assert load_inventory(tmp_path).rdns_gate == "off"


def test_missing_inventory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nope: no such inventory"):
        load_inventory(tmp_path / "nope")
    with pytest.raises(UsageError, match="no inventory Ansible can parse"):
        load_inventory(tmp_path)


def test_zone_for_picks_the_longest_zone() -> None:
    zones = ["test", "lab.test", "100.51.198.in-addr.arpa"]
    assert zone_for("o70.mta1.lab.test", zones) == "lab.test"
    assert zone_for("Lab.Test.", zones) == "lab.test"
    assert zone_for("shop.test", zones) == "test"
    assert zone_for("70.100.51.198.in-addr.arpa", zones) == "100.51.198.in-addr.arpa"
    assert zone_for("70.100.51.198.in-addr.arpa", ["lab.test"]) is None
    assert zone_for("xlab.test", ["lab.test"]) is None


def test_odd_values_are_refused_in_one_line(tmp_path: Path) -> None:
    write(tmp_path, {**BASE, "group_vars/all/pools.yml": "pools: [[]]\n"})
    with pytest.raises(UsageError, match=r"pools\[0\]: expected a pool name, got a list"):
        load_inventory(tmp_path)
    write(tmp_path, {**BASE, "group_vars/all/pools.yml": 'pools: {"a\\nb": {}}\n'})
    with pytest.raises(UsageError) as err:
        load_inventory(tmp_path)
    assert "\n" not in str(err.value) and "pools.a\\nb" in str(err.value)


@pytest.mark.parametrize(
    ("pools_text", "message"),
    [
        # OpenDKIM and RFC 6376 take selectors as host-name labels: '_' was accepted here and refused by site.yml
        ("pools: [a]\nsender_domains: {x.test: {pool: a, selectors: [s_1]}}",
         "sender_domains.x.test.selectors[0]: 's_1' is not a valid DKIM selector"),
        # a domain without an RSA selector cannot be signed: accepted here, refused by site.yml
        ("pools: [a]\nsender_domains: {x.test: {pool: a}}", "sender_domains.x.test.selectors: missing"),
        ("pools: [a]\nsender_domains: {x_y.test: {pool: a, selectors: [s1]}}",
         "sender_domains: 'x_y.test' is not a fully qualified name"),
        ("pools: [a]\nsender_domains: {localhost: {pool: a, selectors: [s1]}}",
         "sender_domains: 'localhost' is not a fully qualified name"),
    ],
)
def test_rules_site_yml_applies_are_the_models(tmp_path: Path, pools_text: str, message: str) -> None:
    files = {**BASE, "host_vars/mta1.yml": "{}\n",
             "hosts.yml": "all:\n  vars: {host_domain: lab.test}\n"
             "  children:\n    senders:\n      hosts:\n        mta1:\n",
             "group_vars/all/pools.yml": pools_text + "\nadmin_networks: [198.51.100.0/28]\n"}
    with pytest.raises(UsageError) as err:
        load_inventory(write(tmp_path, files))
    assert message in str(err.value)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    files = {
        **BASE,
        "group_vars/all/x.yml": "dns_ttl: 0\nrdns_gate: sometimes\n",
        "host_vars/mta1.yml": "sending_ips:\n  - {ip: 198.51.100.70, pool: bulk, ptr: o70.mta1.lab.test}\n"
        "  - {ip: 198.51.100.71, pool: transactional, ptr: o71.mta1.lab.test, weight: 101}\n"
        "  - {ip: 198.51.100.72, pool: transactional, ptr: o72.mta1.lab.test}\n",
    }
    with pytest.raises(InventoryError) as err:
        load_inventory(write(tmp_path, files))
    problems = err.value.problems
    for expected in ("x.yml: rdns_gate: 'sometimes' is not one of", "x.yml: dns_ttl: 0 is outside 1..604800",
                     "host_vars/mta1.yml: sending_ips[0].pool: unknown pool 'bulk'",
                     "host_vars/mta1.yml: sending_ips[1].weight: 101 is outside 1..100",
                     "host_vars/mta1.yml: sending_ips: 198.51.100.72 is not in vetted_ips[transactional]"):
        assert sum(expected in p for p in problems) == 1, (expected, problems)
    assert len(problems) == 5
    assert str(err.value) == f"{problems[0]} (and 4 more problems: sendfleet inventory check lists them)"


def test_inventory_check_lists_them_with_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sendfleet.cli import main

    write(tmp_path, {**BASE, "group_vars/all/x.yml": "dns_ttl: 0\nrdns_gate: sometimes\n"})
    assert main(["inventory", "check", "-i", str(tmp_path), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert [(p["file"], p["key"]) for p in data["problems"]] == [
        ("group_vars/all/x.yml", "rdns_gate"), ("group_vars/all/x.yml", "dns_ttl")]
    write(tmp_path, {"group_vars/all/x.yml": "{}\n"})
    assert main(["inventory", "check", "-i", str(tmp_path)]) == 0
    assert capsys.readouterr().out.endswith(": no problems\n")


def test_variables_lists_every_key_the_model_reads() -> None:
    """The validation play hands the model exactly `VARIABLES`: a key read but not listed would go unchecked."""
    import re

    from sendfleet.core import inventory

    source = Path(inventory.__file__).read_text()
    read = set(re.findall(r'\b(?:v|hv)\.get\("([a-z_]+)"', source)) | {"app_networks", "admin_networks"}
    # read in a loop: variables sendfleet replaced, refused with what replaces them
    read |= {"postfix_transport_limits", "postfix_providers", "dnsbl_monitor_providers"}
    assert read == set(inventory.VARIABLES)


def test_the_play_filter_judges_with_the_model() -> None:
    """sf_inventory_problems (playbooks/validate.yml) gives the model the play's values: an -e override that
    breaks a rule is refused with the model's own words."""
    from tests.unit.plugins import load_plugin

    plugin = load_plugin("filter", "sendfleet_inventory")
    good = {"pools": {"t": {}}, "sender_domains": {"shop.test": {"pool": "t", "selectors": ["s1"]}},
            "admin_networks": ["198.51.100.0/28"], "host_domain": "lab.test", "group_names": ["senders"],
            "vetted_ips": {"t": [{"ip": "198.51.100.70"}]},
            "sending_ips": [{"ip": "198.51.100.70", "pool": "t", "ptr": "o70.mta1.lab.test"}]}
    assert plugin.sf_inventory_problems(["mta1"], {"mta1": good}) == []
    bad = {**good, "sending_ips": [{"ip": "198.51.100.70", "pool": "nosuchpool", "ptr": "o70.mta1.lab.test"}]}
    assert plugin.sf_inventory_problems(["mta1"], {"mta1": bad}) == [
        "mta1 (as the play sees it): sending_ips[0].pool: unknown pool 'nosuchpool' (known: t)"]
