"""The shaper's decisions (policy answers, reactions to replies, persistence, metrics) with a stub MX classifier,
and its policy protocol over a real TCP socket."""

from __future__ import annotations

import json
import random
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from sendfleet.core import maillog, shaping
from sendfleet.monitor import shaper as sh

CLASSES = {
    "gmail": {"mx_suffixes": ["gmail.test"], "limits": {"connections": 2, "messages_per_connection": 20},
              "warmup_share": 0.5,
              "rules": [{"name": "rate", "code": 421, "enhanced": "4.7.28", "action": "suspend", "duration": 600},
                        {"name": "slow", "code": 421, "enhanced": "4.7.0", "action": "throttle", "duration": 300,
                         "limits": {"messages_per_minute": 2}}]},
    "outlook": {"mx_suffixes": ["outlook.test"], "limits": {"connections": 3, "messages_per_connection": 50},
                "rules": [{"name": "s3150", "code": 550, "text": "S3150", "action": "suspend", "duration": 86400}]},
    "other": {"limits": {"connections": 6, "messages_per_connection": 100},
              "rules": [{"name": "spamhaus", "text": "(?i)spamhaus", "action": "drain"}]},
}
MX = {"gmail.test": "gmail", "acme.test": "gmail", "outlook.test": "outlook", "smallbiz.test": "other"}
A, B, C = "198.51.100.70", "198.51.100.71", "198.51.100.72"


class StubClassifier:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def classify(self, domain: str, now: float) -> str | None:
        self.calls.append(domain)
        return MX.get(domain)


def make(tmp_path: Path, members: list[dict[str, Any]] | None = None) -> sh.Shaper:
    data = {
        "host": "mta1",
        "state_file": str(tmp_path / "state.json"),
        "textfile_dir": str(tmp_path / "prom"),
        "members": members if members is not None else [
            {"ip": A, "pool": "transactional", "weight": 1, "warmup": {"warm": True}},
            {"ip": B, "pool": "transactional", "weight": 1, "warmup": {"warm": True}},
            {"ip": C, "pool": "marketing", "weight": 1, "warmup": {"warm": True}},
        ],
        "shaping": {"classes": CLASSES, "sender_pools": {"shop.test": "transactional", "news.test": "marketing"},
                    "state_file": str(tmp_path / "shaping.json")},
    }
    cfg = sh.ShaperConfig(data, "config.json")
    return sh.Shaper(cfg, StubClassifier(), random.Random(7))  # type: ignore[arg-type]


def rcpt(s: sh.Shaper, rcpt_to: str, sender: str = "app@shop.test", instance: str = "i1", now: float = 1000.0) -> str:
    return s.decide({"protocol_state": "RCPT", "sender": sender, "recipient": rcpt_to, "instance": instance}, now)


def reply(ip: str, klass: str, code: int, enhanced: str, text: str, status: str = "deferred") -> maillog.Reply:
    return maillog.Reply(1000.0, "QID", f"sf_{ip.replace('.', '_')}_{klass}", ip, klass, "u@gmail.test",
                         "gmail.test", status, enhanced, code, enhanced, f"{code} {enhanced} {text}", "RCPT TO")


def test_a_provider_class_gets_a_filter_to_an_ip_of_the_senders_pool(tmp_path: Path) -> None:
    s = make(tmp_path)
    seen = {rcpt(s, f"u{i}@gmail.test", instance=f"i{i}") for i in range(200)}
    assert seen == {"FILTER sf_198_51_100_70_gmail:", "FILTER sf_198_51_100_71_gmail:"}
    assert rcpt(s, "x@acme.test", instance="j") in seen  # a custom domain whose MX is Gmail's
    assert rcpt(s, "x@gmail.test", sender="app@news.test", instance="k") == "FILTER sf_198_51_100_72_gmail:"


def test_class_other_and_foreign_senders_take_the_pools_own_path(tmp_path: Path) -> None:
    s = make(tmp_path)
    assert rcpt(s, "a@smallbiz.test") == "DUNNO"
    assert rcpt(s, "a@gmail.test", sender="someone@elsewhere.test", instance="i2") == "DUNNO"
    assert rcpt(s, "a@gmail.test", sender="", instance="i3") == "DUNNO"
    assert s.decide({"protocol_state": "DATA", "sender": "a@shop.test", "recipient": "a@gmail.test"}, 1) == "DUNNO"


def test_a_second_class_in_one_transaction_is_deferred_with_452(tmp_path: Path) -> None:
    s = make(tmp_path)
    first = rcpt(s, "a@gmail.test", instance="t")
    assert rcpt(s, "b@acme.test", instance="t") == first  # same class: the same transport
    answer = rcpt(s, "c@outlook.test", instance="t")
    assert answer.startswith("452 4.5.3") and "outlook" in answer
    other_first = rcpt(s, "a@smallbiz.test", instance="u")
    assert other_first == "DUNNO"
    assert rcpt(s, "b@gmail.test", instance="u").startswith("452 4.5.3")


def test_an_unanswered_mx_lookup_is_a_temporary_refusal(tmp_path: Path) -> None:
    s = make(tmp_path)
    assert rcpt(s, "a@nowhere.test").startswith("451 4.4.3")


def test_421_4728_suspends_that_path_only_and_others_take_the_mail(tmp_path: Path) -> None:
    s = make(tmp_path)
    event = s.on_reply(reply(A, "gmail", 421, "4.7.28", "unusual rate of unsolicited mail"), 1000.0)
    assert event is not None and event.kind == "suspend" and event.until == 1600.0
    answers = {rcpt(s, f"u{i}@gmail.test", instance=f"x{i}", now=1001.0) for i in range(100)}
    assert answers == {"FILTER sf_198_51_100_71_gmail:"}
    assert rcpt(s, "v@outlook.test", instance="y", now=1001.0) in {
        "FILTER sf_198_51_100_70_outlook:", "FILTER sf_198_51_100_71_outlook:"}
    outlook = {rcpt(s, f"o{i}@outlook.test", instance=f"o{i}", now=1001.0) for i in range(100)}
    assert "FILTER sf_198_51_100_70_outlook:" in outlook  # A still carries its other classes
    s.expire(1601.0)
    back = {rcpt(s, f"w{i}@gmail.test", instance=f"w{i}", now=1601.0) for i in range(100)}
    assert "FILTER sf_198_51_100_70_gmail:" in back


def test_the_last_usable_ip_is_not_suspended_but_said_loudly(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.on_reply(reply(A, "gmail", 421, "4.7.28", "unusual rate"), 1000.0)
    event = s.on_reply(reply(B, "gmail", 421, "4.7.28", "unusual rate"), 1000.0)
    assert event is not None and event.kind == "blocked"
    assert {rcpt(s, f"u{i}@gmail.test", instance=f"b{i}", now=1001.0) for i in range(20)} == {
        "FILTER sf_198_51_100_71_gmail:"}
    assert 'sendfleet_path_suspend_blocked{ip="198.51.100.71"' in s.metrics(1001.0)


def test_a_throttle_holds_the_path_to_its_rate_and_spills_over(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.on_reply(reply(A, "gmail", 421, "4.7.0", "try again later"), 1000.0)
    answers = [rcpt(s, f"u{i}@gmail.test", instance=f"t{i}", now=1000.0 + i * 0.01) for i in range(100)]
    assert answers.count("FILTER sf_198_51_100_70_gmail:") == 2  # messages_per_minute 2 while throttled


def test_a_blocklist_reply_asks_for_a_drain_and_unknown_replies_do_nothing(tmp_path: Path) -> None:
    s = make(tmp_path)
    event = s.on_reply(reply(A, "gmail", 554, "5.7.1", "blocked using zen.spamhaus.org"), 1000.0)
    assert event is not None and event.kind == "drain"  # `other`'s generic rules apply to every class
    assert s.on_reply(reply(A, "gmail", 450, "4.2.0", "mailbox busy"), 1000.0) is None
    assert s.on_reply(reply(A, "gmail", 421, "4.7.28", "rate", status="sent"), 1000.0) is None


def test_drained_ips_are_read_from_the_monitors_state(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.cfg.monitor_state_file = tmp_path / "monitor.json"
    s.cfg.monitor_state_file.write_text(json.dumps({"ips": {A: {"status": "drained"}}}))
    assert {rcpt(s, f"u{i}@gmail.test", instance=f"d{i}") for i in range(50)} == {"FILTER sf_198_51_100_71_gmail:"}


def test_every_ip_held_defers_the_recipient(tmp_path: Path) -> None:
    s = make(tmp_path)
    answer = rcpt(s, "a@gmail.test", sender="app@news.test", instance="m")
    assert answer == "FILTER sf_198_51_100_72_gmail:"
    s.operator(C, "gmail", "suspend", 60, 1000.0)
    held = rcpt(s, "b@gmail.test", sender="app@news.test", instance="n", now=1001.0)
    assert held.startswith("451 4.7.0") and "suspended" in held


def test_a_warming_ip_spills_over_at_its_daily_cap(tmp_path: Path) -> None:
    members = [{"ip": A, "pool": "transactional", "weight": 1, "warmup": {"warm": False, "hourly": 1.0}},
               {"ip": B, "pool": "transactional", "weight": 1, "warmup": {"warm": True}}]
    s = make(tmp_path, members)
    answers = [rcpt(s, f"u{i}@gmail.test", instance=f"c{i}") for i in range(300)]
    assert answers.count("FILTER sf_198_51_100_70_gmail:") == 12  # 1/h x 24 h x warmup_share 0.5
    assert answers.count("FILTER sf_198_51_100_71_gmail:") == 288


def test_state_survives_a_restart(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.on_reply(reply(A, "gmail", 421, "4.7.28", "unusual rate"), 1000.0)
    s.save(1000.0)
    again = make(tmp_path)
    assert {rcpt(again, f"u{i}@gmail.test", instance=f"r{i}", now=1100.0) for i in range(50)} == {
        "FILTER sf_198_51_100_71_gmail:"}
    saved = json.loads((tmp_path / "shaping.json").read_text())
    assert saved["paths"][0]["reply"].startswith("421 4.7.28")
    prom = (tmp_path / "prom" / "sendfleet_shaping.prom").read_text()
    assert 'sendfleet_path_state{ip="198.51.100.70",pool="transactional",provider="gmail",state="suspended"} 1' in prom


def test_the_policy_protocol_over_tcp(tmp_path: Path) -> None:
    s = make(tmp_path)
    server = sh._Server(("127.0.0.1", 0), sh._policy_handler(s))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(server.server_address[:2], timeout=5) as conn:
            f = conn.makefile("rwb")
            for rcpt_to, want in (("a@gmail.test", "action=FILTER sf_198_51_100_7"), ("b@smallbiz.test",
                                                                                   "action=DUNNO")):
                req = f"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=app@shop.test\nrecipient={rcpt_to}\n"
                f.write((req + f"instance={rcpt_to}\n\n").encode())
                f.flush()
                line = f.readline().decode()
                assert line.startswith(want), line
                assert f.readline() == b"\n"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("bad", [{"shaping": {}}, {"shaping": {"classes": {"gmail": {}}}}])
def test_a_bad_config_is_one_clear_error(bad: dict[str, Any]) -> None:
    with pytest.raises(Exception, match=r"bad shaping config|provider_classes|shaping\.classes"):
        sh.ShaperConfig(bad, "config.json")


def test_the_class_names_are_the_cores(tmp_path: Path) -> None:
    assert set(make(tmp_path).cfg.classes) == set(shaping.parse_classes(CLASSES))


def test_throttles_in_force_lower_connections_for_postfix(tmp_path: Path) -> None:
    s = make(tmp_path)
    classes = s.cfg.classes
    paths = [shaping.PathState(A, "gmail", shaping.THROTTLED, 2000.0, 1000.0, "x", "r", {"connections": 1}).as_dict(),
             shaping.PathState(B, "gmail", shaping.THROTTLED, 900.0, 800.0, "x", "r", {"connections": 1}).as_dict(),
             shaping.PathState(C, "gmail", shaping.THROTTLED, 2000.0, 1000.0, "x", "r", {"connections": 5}).as_dict(),
             shaping.PathState(A, "outlook", shaping.SUSPENDED, 2000.0, 1000.0, "x", "r").as_dict()]
    # B's throttle is over, C's allows more than the class, a suspension is the shaper's alone
    assert shaping.throttled_connections(paths, classes, 1500.0) == {f"{A} gmail": 1}


def test_replies_read_again_after_their_action_is_over_do_nothing(tmp_path: Path) -> None:
    s = make(tmp_path)
    old = reply(A, "gmail", 421, "4.7.28", "unusual rate")  # logged at 1000, the rule lasts 600 s
    assert s.on_reply(old, 1700.0) is None
    assert s.on_reply(old, 1500.0) is not None


def test_a_blocklist_reply_for_a_drained_ip_is_held(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.cfg.monitor_state_file = tmp_path / "monitor.json"
    s.cfg.monitor_state_file.write_text(json.dumps({"ips": {A: {"status": "drained"}}}))
    event = s.on_reply(reply(A, "gmail", 554, "5.7.1", "blocked using zen.spamhaus.org"), 1000.0)
    assert event is not None and event.kind == "hold"


def test_the_mx_classifier_caches_for_the_ttl_and_falls_back_to_the_domain(tmp_path: Path) -> None:
    from sendfleet.dns import mx

    cfg = make(tmp_path).cfg
    c = sh.Classifier(cfg)
    calls: list[str] = []
    answers = {"acme.test": mx.MxAnswer(mx.OK, ("mx1.l.gmail.test", "backup.smallbiz.test"), 300),
               "outlook.test": mx.MxAnswer(mx.IMPLICIT, ("outlook.test",), 3600),
               "short.test": mx.MxAnswer(mx.OK, ("mx.outlook.test",), 5)}

    def lookup(name: str) -> mx.MxAnswer:
        calls.append(name)
        return answers.get(name, mx.MxAnswer(mx.FAILED, detail="timeout"))

    c.mx = lookup  # type: ignore[assignment]
    assert c.classify("acme.test", 0.0) == "gmail"  # the MX of best preference decides
    assert c.classify("acme.test", 299.0) == "gmail" and calls.count("acme.test") == 1  # cached for the TTL
    assert c.classify("acme.test", 301.0) == "gmail" and calls.count("acme.test") == 2
    assert c.classify("outlook.test", 0.0) == "outlook"  # no MX: the domain itself is the host
    assert c.classify("short.test", 0.0) == "outlook"
    assert c.classify("short.test", sh.MIN_TTL - 1.0) == "outlook" and calls.count("short.test") == 1  # at least
    assert c.classify("slow.test", 0.0) is None  # DNS cannot say now: the caller answers 4xx
    assert c.classify("slow.test", 0.0) is None and calls.count("slow.test") == 2  # and a failure is not cached


def test_a_drain_in_progress_is_not_asked_again_and_any_save_is_what_the_agent_reads(tmp_path: Path) -> None:
    s = make(tmp_path)
    first = s.on_reply(reply(A, "gmail", 554, "5.7.1", "blocked using zen.spamhaus.org"), 1000.0)
    again = s.on_reply(reply(A, "gmail", 554, "5.7.1", "blocked using zen.spamhaus.org"), 1000.0)
    assert first is not None and first.kind == "drain" and again is not None and again.kind == "hold"
    s.operator(B, "outlook", "throttle", 600, 1000.0)
    s.save(1000.0, force=True)  # e.g. the control thread's save, not the main loop's
    assert [(p["ip"], p["class"], p["status"]) for p in s.saved_paths] == [(B, "outlook", "throttled")]
