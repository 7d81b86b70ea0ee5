"""Property tests (hypothesis) for the parsers the vet tests do not cover (bad input): the inventory
model (pools, sender_domains, sending_ips, vetted_ips, networks), the inventory directory loader and YAML
reader, pool assignment planning and the lab's configuration.

Two kinds of properties: any input at all is either accepted or refused with a one-line UsageError (never
another exception); and well-formed input is read faithfully (nothing dropped, invented or moved).
"""

from __future__ import annotations

import ipaddress
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sendfleet import yamlfile
from sendfleet.core.assign import plan_assignments, ptr_name
from sendfleet.core.inventory import HostSource, VarSource, build_inventory
from sendfleet.errors import UsageError
from sendfleet.inventory_io import load_inventory
from sendfleet.lab.config import LabConfig

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --------------------------------------------------------------------------------------------- strategies

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 2**40), st.floats(allow_nan=False),
                    st.text(max_size=30), st.sampled_from(["198.51.100.70", "198.51.100.0/24", "2001:db8::1",
                                                           "transactional", "o70.mta1.lab.test", "{{ x }}",
                                                           "2026-11-27", "", "-", "198.51.100.300"]))
junk = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                    st.dictionaries(st.text(max_size=12) | st.sampled_from(
                                                        ["ip", "pool", "ptr", "helo", "weight", "warmup_start",
                                                         "selectors", "dmarc", "spf_domain"]), kids, max_size=4)),
                    max_leaves=12)
pool_names = st.from_regex(r"\A[a-z][a-z0-9_-]{0,11}\Z")
labels = st.from_regex(r"\A[a-z][a-z0-9]{0,9}\Z")
V4 = ipaddress.ip_network("198.51.100.64/26")
V6 = ipaddress.ip_network("2001:db8:5f::/120")
addresses = st.one_of(st.integers(0, V4.num_addresses - 1).map(lambda i: V4[i]),
                      st.integers(0, V6.num_addresses - 1).map(lambda i: V6[i]))


def inventory(global_vars: dict[str, Any], hosts: dict[str, dict[str, Any]]) -> Any:
    site = {"host_domain": "lab.test", "admin_networks": ["198.51.100.0/28"]}
    return build_inventory(Path("/inv"), [VarSource("group_vars/all/site.yml", site),
                                          VarSource("group_vars/all/pools.yml", global_vars)],
                           [HostSource(h, ("senders",), [VarSource(f"host_vars/{h}.yml", v)])
                            for h, v in hosts.items()])


# --------------------------------------------------------------------------- the inventory model: any input


@PROPS
@given(pools=junk, domains=junk, sending=junk, vetted=junk, app=junk)
def test_any_inventory_values_are_accepted_or_refused_in_one_line(pools: Any, domains: Any, sending: Any,
                                                                   vetted: Any, app: Any) -> None:
    gv = {"pools": pools, "sender_domains": domains, "vetted_ips": vetted, "app_networks": app}
    try:
        inventory({k: v for k, v in gv.items() if v is not None}, {"mta1": {"sending_ips": sending}})
    except UsageError as err:
        text = str(err)
        assert text and "\n" not in text, f"not one line: {text!r}"
        assert "Traceback" not in text


def test_pools_as_a_list_of_lists_is_refused_in_one_line() -> None:
    """Found by the property above (it was a TypeError)."""
    with pytest.raises(UsageError):
        inventory({"pools": [[]]}, {})


@PROPS
@given(entries=st.lists(st.dictionaries(st.sampled_from(["ip", "pool", "ptr", "helo", "weight", "warmup_start"]),
                                        scalars, max_size=6), max_size=4))
def test_sending_ips_entries_of_any_shape(entries: list[dict[str, Any]]) -> None:
    """Entry by entry: a missing or wrong field is refused naming the entry (`sending_ips[i].field`)."""
    gv: dict[str, Any] = {"pools": {"transactional": {}, "marketing": {}}}
    try:
        inv = inventory(gv, {"mta1": {"sending_ips": entries}})
    except UsageError as err:
        assert "sending_ips" in str(err) and "\n" not in str(err), str(err)
        return
    assert len(inv.sending_ips()) == len(entries)
    for sip, raw in zip(inv.sending_ips(), entries, strict=True):
        assert sip.ip == ipaddress.ip_address(str(raw["ip"]).strip())
        assert sip.pool == raw["pool"] and sip.pool in gv["pools"]


# ------------------------------------------------------------------ the inventory model: well-formed input


@st.composite
def fleets(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    pools = draw(st.lists(pool_names, min_size=1, max_size=4, unique=True))
    host_names = draw(st.lists(labels, min_size=1, max_size=4, unique=True))
    ips = draw(st.lists(addresses, max_size=12, unique=True))
    hosts: dict[str, dict[str, Any]] = {h: {"sending_ips": []} for h in host_names}
    for ip in ips:
        host = draw(st.sampled_from(host_names))
        entry: dict[str, Any] = {"ip": str(ip), "pool": draw(st.sampled_from(pools)),
                 "ptr": f"o{int(ip) & 0xFFFF:x}.{host}.lab.test"}
        if draw(st.booleans()):
            entry["weight"] = draw(st.integers(1, 100))
        hosts[host]["sending_ips"].append(entry)
    domains = {f"{d}.test": {"pool": draw(st.sampled_from(pools)), "selectors": ["s2026a"]}
               for d in draw(st.lists(labels, max_size=3, unique=True))}
    vetted = {p: [{"ip": e["ip"], "vetted": "2026-11-27"} for h in hosts.values() for e in h["sending_ips"]
                  if e["pool"] == p] for p in pools}
    return {"pools": {p: {} for p in pools}, "sender_domains": domains, "vetted_ips": vetted,
            "app_networks": ["198.51.100.32/29"]}, hosts


@PROPS
@given(fleet=fleets())
def test_well_formed_fleet_is_read_faithfully(fleet: tuple[dict[str, Any], dict[str, dict[str, Any]]]) -> None:
    gv, hosts = fleet
    inv = inventory(gv, hosts)
    expected = [(h, ipaddress.ip_address(e["ip"]), e["pool"], e["ptr"], e.get("weight", 1))
                for h, v in hosts.items() for e in v["sending_ips"]]
    assert [(s.host, s.ip, s.pool, s.ptr, s.weight) for s in inv.sending_ips()] == expected
    assert set(inv.pools) == set(gv["pools"])
    for pool in gv["pools"]:
        assert {s.ip for s in inv.pool_ips(pool)} == {ipaddress.ip_address(v["ip"]) for v in gv["vetted_ips"][pool]}
    for _, ip, pool, _, _ in expected:
        found = inv.find_ip(ip)
        assert found is not None and found.pool == pool
    assert {d: s.pool for d, s in inv.sender_domains.items()} == {d: s["pool"] for d, s in gv["sender_domains"].items()}


@PROPS
@given(fleet=fleets(), bad_pool=pool_names, data=st.data())
def test_an_unknown_pool_anywhere_is_refused_naming_it(fleet: tuple[dict[str, Any], dict[str, dict[str, Any]]],
                                                       bad_pool: str, data: st.DataObject) -> None:
    gv, hosts = fleet
    assume(bad_pool not in gv["pools"])
    places = [("host", h, i) for h, v in hosts.items() for i in range(len(v["sending_ips"]))]
    places += [("domain", d, 0) for d in gv["sender_domains"]] + [("vetted", "", 0)]
    kind, name, index = data.draw(st.sampled_from(places))
    if kind == "host":
        hosts[name]["sending_ips"][index]["pool"] = bad_pool
    elif kind == "domain":
        gv["sender_domains"][name]["pool"] = bad_pool
    else:
        gv["vetted_ips"][bad_pool] = [{"ip": "198.51.100.70"}]
    with pytest.raises(UsageError, match=bad_pool):
        inventory(gv, hosts)


@PROPS
@given(fleet=fleets(), data=st.data())
def test_an_ip_on_two_hosts_is_refused_naming_it(fleet: tuple[dict[str, Any], dict[str, dict[str, Any]]],
                                                 data: st.DataObject) -> None:
    gv, hosts = fleet
    entries = [(h, e) for h, v in hosts.items() for e in v["sending_ips"]]
    assume(entries)
    host, entry = data.draw(st.sampled_from(entries))
    hosts.setdefault("dup", {"sending_ips": []})
    hosts["dup"]["sending_ips"] = [*hosts["dup"]["sending_ips"], {**entry, "ptr": "o1.dup.lab.test"}]
    assume(host != "dup")
    with pytest.raises(UsageError, match=str(ipaddress.ip_address(entry["ip"]))):
        inventory(gv, hosts)


@PROPS
@given(text=st.text(max_size=40))
def test_networks_are_cidrs_or_refused(text: str) -> None:
    gv = {"pools": {"p": {}}, "app_networks": [text]}
    try:
        inv = inventory(gv, {})
    except UsageError as err:
        assert "app_networks[0]" in str(err)
        return
    assert inv.app_networks == (ipaddress.ip_network(text.strip()),)


# ----------------------------------------------------------------------------- files: YAML and the loader


@PROPS
@given(text=st.text(max_size=200) | st.sampled_from([": :", "a: [", "{", "- a\nb: c", "\t- x", "!!python/name:os",
                                                     "key: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n"]))
def test_yaml_reader_returns_data_or_one_line_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("y") / "f.yml"
    path.write_text(text)
    try:
        yamlfile.load(path)
    except UsageError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err), str(err)


@FEW
@given(pools_text=st.text(max_size=120), host_text=st.text(max_size=120),
       which=st.sampled_from(["group_vars/all/pools.yml", "host_vars/mta1.yml", "hosts.yml",
                              "group_vars/all/vetted_ips.yml"]))
def test_inventory_dir_with_any_file_content_loads_or_names_the_file(tmp_path_factory: pytest.TempPathFactory,
                                                                     pools_text: str, host_text: str,
                                                                     which: str) -> None:
    root = tmp_path_factory.mktemp("inv")
    files = {
        "hosts.yml": "all:\n  children:\n    senders:\n      hosts:\n        mta1:\n",
        "group_vars/all/pools.yml": "pools: {transactional: {}}\napp_networks: [198.51.100.32/29]\n",
        "host_vars/mta1.yml": "sending_ips: [{ip: 198.51.100.70, pool: transactional, ptr: o70.mta1.lab.test}]\n",
    }
    files[which] = pools_text if which != "host_vars/mta1.yml" else host_text
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    try:
        load_inventory(root)
    except UsageError as err:
        assert "\n" not in str(err), str(err)


# ------------------------------------------------------------------------------------ pool assignment


@st.composite
def assignment_inputs(draw: st.DrawFn) -> dict[str, Any]:
    pools = draw(st.lists(pool_names, min_size=1, max_size=3, unique=True))
    ips = [str(ip) for ip in draw(st.lists(addresses, max_size=20, unique=True))]
    vetted: dict[str, list[str]] = {p: [] for p in pools}
    for ip in ips:
        vetted[draw(st.sampled_from(pools))].append(ip)
    hosts = draw(st.lists(labels, min_size=1, max_size=4, unique=True))
    in_use: dict[str, list[tuple[str, str]]] = {h: [] for h in hosts}
    for pool, pool_ips in vetted.items():
        for ip in pool_ips:
            if draw(st.integers(0, 3)) == 0:
                in_use[draw(st.sampled_from(hosts))].append((ip, pool))
    return {"senders": hosts, "vetted": vetted, "in_use": in_use, "per_host": draw(st.integers(1, 4)),
            "pools": draw(st.lists(st.sampled_from(pools), min_size=1, unique=True))}


@PROPS
@given(args=assignment_inputs())
def test_assignment_plan_properties(args: dict[str, Any]) -> None:
    plan = plan_assignments(**args, ptr_template="o{octet}.{host}.{domain}", domain="lab.test")
    used = {ip for pairs in args["in_use"].values() for ip, _ in pairs}
    new = [a.ip for a in plan]
    assert len(new) == len(set(new)), "an IP handed out twice"
    assert not set(new) & used, "an IP already in use handed out again"
    for a in plan:
        assert a.pool in args["pools"] and a.ip in args["vetted"][a.pool], f"{a.ip} not vetted in {a.pool}"
        assert a.host in args["senders"]
        assert a.ptr.endswith(f".{a.host}.lab.test")
    for host in args["senders"]:
        for pool in args["pools"]:
            have = sum(1 for _, p in args["in_use"][host] if p == pool)
            got = sum(1 for a in plan if a.host == host and a.pool == pool)
            assert got <= max(0, args["per_host"] - have)
    # Applying the plan and planning again gives nothing more unless vetted IPs are left over.
    in_use = {h: [*pairs, *((a.ip, a.pool) for a in plan if a.host == h)] for h, pairs in args["in_use"].items()}
    again = plan_assignments(**{**args, "in_use": in_use}, ptr_template="o{octet}.{host}.{domain}",
                             domain="lab.test")
    assert not {a.ip for a in again} & {a.ip for a in plan}
    if again:
        assert all(sum(1 for _, p in in_use[a.host] if p == a.pool) < args["per_host"] for a in again)


@PROPS
@given(ip=addresses, host=labels)
def test_ptr_names_are_host_names(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str) -> None:
    name = ptr_name("o{octet}.{host}.{domain}", str(ip), host, "lab.test")
    assert name.endswith(f".{host}.lab.test")
    assert all(c in string.ascii_lowercase + string.digits + ".-" for c in name)
    assert ptr_name("{ip}.{domain}", str(ip), host, "lab.test") == str(ip).replace(".", "-").replace(":", "-") + \
        ".lab.test"


# ------------------------------------------------------------------------------------------ lab config


@PROPS
@given(network=st.one_of(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=25),
                         st.builds(lambda a, p: f"{ipaddress.IPv4Address(a)}/{p}", st.integers(0, 2**32 - 1),
                                   st.integers(0, 33))),
       senders=st.integers(-2, 12), bridge=st.text(max_size=20))
def test_lab_config_accepts_a_sane_shape_or_refuses_in_one_line(network: str, senders: int, bridge: str) -> None:
    try:
        cfg = LabConfig(network=network, senders=senders, bridge=bridge)
    except UsageError as err:
        assert "\n" not in str(err), str(err)
        return
    net = ipaddress.ip_network(network)
    assert net.prefixlen == 24
    for forbidden in ("192.0.2.0/24", "203.0.113.0/24"):
        assert not net.overlaps(ipaddress.ip_network(forbidden))
    assert senders >= 1 and 0 < len(bridge) <= 15
    addrs = [h.ipv4 for h in cfg.hosts]
    assert len(addrs) == len(set(addrs)) and all(ipaddress.ip_address(a) in net for a in addrs)


# ------------------------------------------------- records read from DNS and mail headers (untrusted input)

record_words = st.sampled_from(["v=spf1", "v=DKIM1", "v=DMARC1", "ip4:198.51.100.0/24", "ip6:2001:db8::/32",
                                "include:_spf.lab.test", "a", "mx", "ptr", "exists:%{i}.x.test", "redirect=x.test",
                                "-all", "~all", "?all", "+all", "all", "k=rsa", "k=ed25519", "p=", "p=MIIB",
                                "h=sha256", "t=y", "p=none", "p=reject", "rua=mailto:a@b.test", "pct=50", ";",
                                "=", "ip4:300.1.1.1", "ip4:198.51.100.1/33", "a:", "mx/24", "%{", "exp=", ""])
records = st.one_of(st.text(max_size=80), st.lists(record_words, max_size=8).map(" ".join),
                    st.lists(record_words, max_size=8).map("; ".join))


def lookup_anything(values: tuple[str, ...]) -> Any:
    from sendfleet.core.lookup import LookupResult

    def lookup(name: str, rdtype: str) -> LookupResult:
        return LookupResult("ok", values) if rdtype == "TXT" else LookupResult("nxdomain")

    return lookup


@PROPS
@given(record=records, published=st.lists(records, max_size=3))
def test_spf_parse_count_and_lint_never_crash(record: str, published: list[str]) -> None:
    from sendfleet.core import spf

    try:
        terms = spf.parse(record)
    except spf.SpfSyntaxError:
        terms = None
    if terms is not None:
        assert record.split() and record.split()[0].lower() == "v=spf1"
    spf.count("shop.test", record, lookup_anything(tuple(published)))
    for finding in spf.lint("shop.test", [record, *published], lookup_anything(tuple(published))):
        assert finding.message and "\n" not in finding.message


@PROPS
@given(record=records, published=st.lists(records, max_size=3), active=st.booleans())
def test_dkim_and_dmarc_records_of_any_shape_are_linted_not_crashed_on(record: str, published: list[str],
                                                                       active: bool) -> None:
    from sendfleet.core import dkim, dmarc

    try:
        tags = dkim.parse_tags(record)
        assert all("=" not in k for k in tags)
    except ValueError:
        pass
    for finding in dkim.lint("s2026a._domainkey.shop.test", [record, *published], None, active=active):
        assert finding.message
    for finding in dmarc.lint("shop.test", [record, *published]):
        assert finding.message
    try:
        parsed = dmarc.parse(record)
    except dmarc.DmarcError:
        parsed = None
    if parsed is not None:  # usable: v=DMARC1 first, a policy second, every effective value in its domain
        assert dmarc.is_dmarc(record) and list(parsed.tags)[:2] == ["v", "p"]
        assert parsed.p in dmarc.POLICIES and parsed.adkim in "rs" and parsed.aspf in "rs"
        assert 0 <= parsed.pct <= 100 and all("\n" not in problem for problem in parsed.problems)
    found = dmarc.discover("news.shop.co.uk", lambda name: [record, *published])
    assert found.name == "_dmarc.news.shop.co.uk" or not any(map(dmarc.is_dmarc, [record, *published]))


domain_names = st.one_of(st.text(max_size=40), st.lists(st.sampled_from(
    ["shop", "evil", "co", "uk", "com", "au", "github", "io", "test", "xn--p1ai", "", "*", "www"]), max_size=5
).map(".".join))


@PROPS
@given(a=domain_names, b=domain_names, mode=st.sampled_from(["r", "s", "x"]))
def test_organizational_domains_and_alignment_of_any_name(a: str, b: str, mode: str) -> None:
    from sendfleet.core import dmarc

    org = dmarc.org_domain(a)
    name = a.strip().rstrip(".").lower()
    assert org == name or name.endswith("." + org)  # the org domain is the name or one of its parents
    assert dmarc.org_domain(org) == org
    if name:
        assert dmarc.aligned(a, a, mode)
        assert dmarc.discovery_names(a)[0] == f"_dmarc.{name}"
    assert dmarc.aligned(a, b, mode) == dmarc.aligned(b, a, mode)
    if dmarc.aligned(a, b, "s"):
        assert dmarc.aligned(a, b, "r")


hostnames = st.lists(st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\Z"), min_size=2, max_size=4).map(".".join)
client_ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
# the client part of each form the seed mailboxes' MTAs write (tests/unit/test_readiness_received.py: real ones)
RECEIVED_FORMS = {
    "postfix": "from {helo} (rdns.example [{ip}]) (using TLSv1.3 with cipher X) by mx.example (Postfix) with ESMTPS",
    "gmail": "from {helo} ({helo}. [{ip}]) by mx.google.com with ESMTPS id x for <a@b> (version=TLS1_3 cipher=X)",
    "microsoft": "from {helo} ({ip}) by X.mail.protection.outlook.com (10.167.242.74) with Microsoft SMTP "
                 "Server (version=TLS1_2, cipher=X) id 15.20.1 via Frontend Transport; date",
    "yahoo": "from {ip} (EHLO {helo}) by atlas1.free.mail.bf1.yahoo.com with SMTPs; date",
    "yahoo-mta": "from 127.0.0.1  (EHLO {helo}) ({ip}) by mta1.mail.bf1.yahoo.com with SMTPS; date",
    "exim": "from rdns.example ([{ip}]:4711 helo={helo}) by mx.example with esmtps (TLS1.3) tls X (Exim 4.96)",
}


@PROPS
@given(value=st.one_of(st.text(max_size=160), st.lists(st.sampled_from(
    ["from", "by", "with", "(", ")", "[", "]", "EHLO", "helo=", "198.51.100.70", "2001:db8::1", "[198.51.100.70]",
     "(198.51.100.70)", "IPv6:", "ESMTPS", "SMTPs", "version=TLS1_2", ";", "mx.test", "\n\t", ":25", "\""]),
    max_size=14).map(" ".join), st.builds(
    lambda helo, ip, tls: f"from {helo} ({helo} [{ip}]){' (using ' + tls + ' with cipher X)' if tls else ''} by "
                          f"sink.lab.test (Postfix) with ESMTP{'S' if tls else ''} id ABC",
    st.text(max_size=20), st.text(max_size=20), st.sampled_from(["", "TLSv1.3", "TLSv1.2", "junk"]))))
def test_received_headers_of_any_shape_are_parsed_or_ignored(value: str) -> None:
    from sendfleet.core.readiness import parse_received

    hop = parse_received(value)
    if hop is not None:  # a client IP is only reported when the header names a valid one
        assert str(ipaddress.ip_address(hop.ip)) == hop.ip
        assert "\n" not in hop.helo and " " not in hop.helo


@PROPS
@given(form=st.sampled_from(sorted(RECEIVED_FORMS)), helo=hostnames, ip=client_ips)
def test_every_provider_form_yields_the_client_ip_and_helo(form: str, helo: str, ip: str) -> None:
    from sendfleet.core.readiness import parse_received

    hop = parse_received(RECEIVED_FORMS[form].format(helo=helo, ip=ip))
    assert hop is not None and (hop.ip, hop.helo) == (str(ipaddress.ip_address(ip)), helo)
    assert hop.tls_protocol is not None
