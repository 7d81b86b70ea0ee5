"""The DNS drift check of the monitoring host: a plan from `sendfleet dns plan --format json`, answers from a fake
resolver (no network), the textfile node_exporter reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sendfleet.core.dnsdiff import Current, ManagedKey, drifted
from sendfleet.core.inventory import HostSource, VarSource, build_inventory
from sendfleet.core.lookup import LookupResult
from sendfleet.core.metrics import parse
from sendfleet.core.records import Plan, json_text, plan_records, records_from_json
from sendfleet.errors import CannotCheckError, UsageError
from sendfleet.monitor import agent, dnsdrift

FOREIGN = "google-site-verification=abc123"


@pytest.fixture(scope="module")
def plan() -> Plan:
    data: dict[str, object] = {
        "pools": {"transactional": {}},
        "sender_domains": {"shop.test": {"pool": "transactional", "selectors": ["s1"],
                                         "dmarc": {"p": "none", "rua": "mailto:d@shop.test"}}},
        "dns_zones": ["lab.test", "shop.test"],  # the PTRs are the provider's: not checked here
        "host_domain": "lab.test",
        "admin_networks": ["198.51.100.0/28"],
        "sending_ips_require_vetted": False,
    }
    ips = [{"ip": "198.51.100.70", "pool": "transactional", "ptr": "o70.mta1.lab.test"}]
    inv = build_inventory(Path("/inv"), [VarSource("group_vars/all/x.yml", data)],
                          [HostSource("mta1", ("senders",), [VarSource("host_vars/mta1.yml", {"sending_ips": ips})])])
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return plan_records(inv, {("shop.test", "s1"): key})


@pytest.fixture()
def plan_file(tmp_path: Path, plan: Plan) -> Path:
    path = tmp_path / "dns-plan.json"
    path.write_text(json_text(plan, "/inv") + "\n")
    return path


def published(plan: Plan) -> dict[tuple[str, str], tuple[str, ...]]:
    """The zone as `dns apply` leaves it, with someone else's TXT beside the SPF at the apex."""
    zone = {r.key: r.values for r in plan.publishable()}
    zone[("shop.test", "TXT")] = (FOREIGN, *zone[("shop.test", "TXT")])
    return zone


class FakeResolver:
    def __init__(self, zone: dict[tuple[str, str], tuple[str, ...]], fail: set[tuple[str, str]] | None = None,
                 silent: bool = False) -> None:
        self.zone, self.fail, self.silent = zone, fail or set(), silent
        self.asked: list[tuple[str, str]] = []

    def __call__(self, name: str, rdtype: str) -> LookupResult:
        self.asked.append((name, rdtype))
        if self.silent:
            raise CannotCheckError("the resolver (127.0.0.1 port 53) never answered: could not check")
        if (name, rdtype) in self.fail:
            return LookupResult("error", detail="timeout")
        values = self.zone.get((name, rdtype))
        return LookupResult("ok", values) if values else LookupResult("nxdomain")


def run(plan_file: Path, tmp: Path, lookup: FakeResolver, now: float = 1000.0) -> tuple[int, dict[str, float]]:
    code = dnsdrift.run(plan_file, tmp / "textfile", lookup, interval=300, now=now)
    samples = parse((tmp / "textfile" / "sendfleet_dns.prom").read_text())
    flat = {name + "|" + ",".join(v for _, v in labels): value for (name, labels), value in samples.items()}
    return code, flat


def drift_of(flat: dict[str, float]) -> dict[str, float]:
    # labels sorted: name, type, zone
    return {k.split("|")[1]: v for k, v in flat.items() if k.startswith("sendfleet_dns_record_drift|")}


def test_identical_records_are_not_drift_and_every_publishable_record_has_a_gauge(
        plan_file: Path, tmp_path: Path, plan: Plan) -> None:
    lookup = FakeResolver(published(plan))
    code, flat = run(plan_file, tmp_path, lookup)
    assert code == 0
    assert drift_of(flat) == {
        "o70.mta1.lab.test,A,lab.test": 0,
        "shop.test,TXT,shop.test": 0,  # someone else's TXT beside our v=spf1 is theirs
        "s1._domainkey.shop.test,TXT,shop.test": 0,
        "_dmarc.shop.test,TXT,shop.test": 0,
    }
    assert flat["sendfleet_dns_check_ok|"] == 1
    assert flat["sendfleet_dns_last_check_timestamp_seconds|"] == 1000
    assert flat["sendfleet_dns_last_success_timestamp_seconds|"] == 1000
    assert flat["sendfleet_dns_check_interval_seconds|"] == 300
    # the provider's PTR (outside dns_zones) is not asked
    assert ("70.100.51.198.in-addr.arpa", "PTR") not in lookup.asked


def test_a_changed_spf_is_drift_and_only_that(plan_file: Path, tmp_path: Path, plan: Plan) -> None:
    zone = published(plan)
    zone[("shop.test", "TXT")] = (FOREIGN, "v=spf1 ip4:198.51.100.99 ~all")
    code, flat = run(plan_file, tmp_path, FakeResolver(zone))
    assert code == 0 and flat["sendfleet_dns_check_ok|"] == 1
    assert [k for k, v in drift_of(flat).items() if v == 1] == ["shop.test,TXT,shop.test"]


def test_someone_elses_txt_changing_beside_our_spf_is_not_drift(plan_file: Path, tmp_path: Path, plan: Plan) -> None:
    zone = published(plan)
    ours = [v for v in zone[("shop.test", "TXT")] if v.startswith("v=spf1")]
    zone[("shop.test", "TXT")] = ("MS=ms12345", "apple-domain-verification=x", *ours)
    zone[("o70.mta1.lab.test", "A")] = ("198.51.100.5", "198.51.100.70")  # the name also holds a host's address
    _, flat = run(plan_file, tmp_path, FakeResolver(zone))
    assert set(drift_of(flat).values()) == {0}


def test_a_missing_record_or_address_is_drift(plan_file: Path, tmp_path: Path, plan: Plan) -> None:
    zone = published(plan)
    del zone[("s1._domainkey.shop.test", "TXT")]  # NXDOMAIN
    zone[("shop.test", "TXT")] = (FOREIGN,)  # our v=spf1 gone, theirs left
    zone[("o70.mta1.lab.test", "A")] = ("198.51.100.5",)  # our address gone
    _, flat = run(plan_file, tmp_path, FakeResolver(zone))
    assert drift_of(flat) == {
        "o70.mta1.lab.test,A,lab.test": 1,
        "shop.test,TXT,shop.test": 1,
        "s1._domainkey.shop.test,TXT,shop.test": 1,
        "_dmarc.shop.test,TXT,shop.test": 0,
    }


def test_a_lookup_timeout_is_unknown_not_drift(plan_file: Path, tmp_path: Path, plan: Plan) -> None:
    zone = published(plan)
    zone[("shop.test", "TXT")] = ("v=spf1 -all",)
    del zone[("_dmarc.shop.test", "TXT")]
    failing = {("shop.test", "TXT"), ("_dmarc.shop.test", "TXT")}
    code, flat = run(plan_file, tmp_path, FakeResolver(zone, fail=failing))
    assert code == 3
    assert flat["sendfleet_dns_check_ok|"] == 0
    assert set(drift_of(flat).values()) == {0}  # both would differ, but nobody could tell


def test_a_silent_resolver_makes_every_record_unknown_and_keeps_the_last_success(
        plan_file: Path, tmp_path: Path, plan: Plan) -> None:
    zone = published(plan)
    zone[("shop.test", "TXT")] = ("v=spf1 -all",)
    code, first = run(plan_file, tmp_path, FakeResolver(zone), now=1000)
    assert code == 0 and drift_of(first)["shop.test,TXT,shop.test"] == 1
    code, flat = run(plan_file, tmp_path, FakeResolver(zone, silent=True), now=1300)
    assert code == 3
    assert flat["sendfleet_dns_check_ok|"] == 0
    assert set(drift_of(flat).values()) == {0} and len(drift_of(flat)) == 4
    assert flat["sendfleet_dns_last_check_timestamp_seconds|"] == 1300
    assert flat["sendfleet_dns_last_success_timestamp_seconds|"] == 1000


def test_a_first_check_that_fails_starts_the_clock(plan_file: Path, tmp_path: Path, plan: Plan) -> None:
    _, flat = run(plan_file, tmp_path, FakeResolver(published(plan), silent=True), now=500)
    assert flat["sendfleet_dns_last_success_timestamp_seconds|"] == 500
    _, flat = run(plan_file, tmp_path, FakeResolver(published(plan), silent=True), now=800)
    assert flat["sendfleet_dns_last_success_timestamp_seconds|"] == 500


def test_an_unreadable_plan_is_a_failed_check_in_the_textfile(tmp_path: Path) -> None:
    bad = tmp_path / "dns-plan.json"
    bad.write_text('{"records": [{"name": "shop.test"}]}')
    code = agent.main(["dnsdrift", "--plan", str(bad), "--textfile-dir", str(tmp_path / "tf"),
                       "--nameserver", "127.0.0.1", "--interval", "5min"])
    assert code == 2
    samples = parse((tmp_path / "tf" / "sendfleet_dns.prom").read_text())
    assert samples[("sendfleet_dns_check_ok", ())] == 0
    assert samples[("sendfleet_dns_check_interval_seconds", ())] == 300
    assert not [k for k in samples if k[0] == "sendfleet_dns_record_drift"]


@pytest.mark.parametrize(("data", "message"), [
    ({"problems": []}, "plan.json: records: missing"),
    ({"records": ["x"]}, "plan.json: records[0]: expected a mapping"),
    ({"records": [{"name": "a.test", "type": "TXT", "ttl": 300, "values": "v=spf1 -all", "purpose": "spf",
                   "subject": "a.test", "zone": "a.test"}]}, "plan.json: records[0].values: expected a list"),
    ({"records": [{"name": "a.test", "type": "TXT", "ttl": "300", "values": [], "purpose": "spf",
                   "subject": "a.test", "zone": "a.test"}]}, "plan.json: records[0].ttl: expected a TTL"),
    ({"records": [{"type": "TXT", "ttl": 300, "values": [], "purpose": "spf", "subject": "a.test"}]},
     "plan.json: records[0].name: expected a non-empty string"),
])
def test_malformed_plans_are_refused_naming_the_key(data: object, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        records_from_json(data, "plan.json")


def test_the_json_plan_reads_back_as_planned(plan: Plan) -> None:
    back = records_from_json(json.loads(json_text(plan)), "plan.json")
    assert [(r.zone, r.name, r.rtype, r.ttl, r.values, r.match, r.error) for r in back] == [
        (r.zone, r.name, r.rtype, r.ttl, r.values, r.match, r.error) for r in plan.records]


def test_drifted_compares_ttls_only_where_the_answer_has_one(plan: Plan) -> None:
    dmarc = next(r for r in plan.publishable() if r.name == "_dmarc.shop.test")
    assert drifted([dmarc], {dmarc.key: Current(None, dmarc.values)}) == []
    assert drifted([dmarc], {dmarc.key: Current(dmarc.ttl + 1, dmarc.values)}) == [
        ManagedKey("shop.test", "_dmarc.shop.test", "TXT", "")]
    assert drifted([dmarc], {}) == []  # not answered: unknown
