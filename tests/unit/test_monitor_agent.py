"""The monitor agent's glue: config parsing, the Postfix changes it plans, its metrics (no Postfix, no DNS)."""

from __future__ import annotations

from typing import Any

import pytest

from sendfleet.core import drain, maillog
from sendfleet.core.metrics import parse, samples_of
from sendfleet.errors import UsageError
from sendfleet.monitor import agent

MAPS = ("pipemap:{regexp:/etc/postfix/sender_pool_t.regexp, randmap:{sf_198_51_100_70, sf_198_51_100_72, "
        "sf_198_51_100_73}}")


def config(**extra: Any) -> agent.Config:
    members = [
        {"ip": "198.51.100.70", "pool": "t", "transport": "sf_198_51_100_70", "weight": 1,
         "limits": {"concurrency_limit": 1, "rate_delay": 129}, "warmup": {"day": 1, "warm": False}},
        {"ip": "198.51.100.72", "pool": "t", "transport": "sf_198_51_100_72", "weight": 20, "limits": {}},
        {"ip": "198.51.100.73", "pool": "t", "transport": "sf_198_51_100_73", "weight": 20, "limits": {}},
    ]
    return agent.Config({"zones_file": "/x/zones.yml", "members": members, **extra}, "test")


def test_config_errors_are_one_line() -> None:
    with pytest.raises(UsageError, match="bad monitor config"):
        agent.Config({"members": []}, "cfg.json")  # no zones_file
    cfg = config(resolvers=["198.51.100.4"], restore_after=2)
    assert cfg.settings.restore_after == 2 and str(cfg.resolvers[0]) == "198.51.100.4"


def test_selection_plan_weights_limits_and_drains() -> None:
    cfg = config()
    current = {"sender_dependent_default_transport_maps": MAPS, "sf_198_51_100_70_destination_rate_delay": "0s",
               "sf_198_51_100_70_destination_concurrency_limit": "5"}
    changes, record = agent.selection_plan(cfg, set(), {}, current)
    maps = changes["sender_dependent_default_transport_maps"]
    assert maps is not None and maps.count("sf_198_51_100_70") == 1 and maps.count("sf_198_51_100_72") == 20
    assert changes["sf_198_51_100_70_destination_rate_delay"] == "129s"
    assert changes["sf_198_51_100_70_destination_concurrency_limit"] == "1"
    # drained: out of the randmap, its limits back to the baseline
    applied = {**current, **{k: v for k, v in changes.items() if v is not None}}
    changes2, record2 = agent.selection_plan(cfg, {"198.51.100.70"}, record, applied)
    assert "sf_198_51_100_70" not in (changes2["sender_dependent_default_transport_maps"] or "")
    assert changes2["sf_198_51_100_70_destination_rate_delay"] == "0s" and record2 == {}


def test_member_without_a_transport_is_never_selected() -> None:
    cfg = config()
    services = {"sf_198_51_100_72", "sf_198_51_100_73", "smtp"}
    changes, _ = agent.selection_plan(cfg, set(), {}, {"sender_dependent_default_transport_maps": MAPS}, services)
    maps = changes["sender_dependent_default_transport_maps"]
    assert maps is not None and "sf_198_51_100_70" not in maps
    assert not any(k.startswith("sf_198_51_100_70_") for k in changes)


def test_equal_weights_no_drain_plan_nothing() -> None:
    members = [{"ip": f"198.51.100.{n}", "pool": "t", "transport": f"sf_198_51_100_{n}", "weight": 1}
               for n in (70, 72, 73)]
    cfg = agent.Config({"zones_file": "z", "members": members}, "t")
    assert agent.selection_plan(cfg, set(), {}, {"sender_dependent_default_transport_maps": MAPS}) == ({}, {})


def test_monitor_metrics_from_state() -> None:
    cfg = config()
    state = {
        "ips": {"198.51.100.70": drain.IpState("198.51.100.70", "t", drain.DRAINED, 1).as_dict()},
        "verdicts": {"198.51.100.70": {"verdict": "clean", "evidence": [{"zone": "zen", "outcome": "clean"}]},
                     "198.51.100.72": {"verdict": "unknown", "evidence": [{"zone": "zen", "outcome": "unknown"}]}},
        "zones": [{"zone": "zen", "status": "ok"}],
        "check_ok": True,
        "last_run_ts": 10.0,
    }
    parsed = parse(agent.monitor_metrics(cfg, state))
    drained = {lbl["ip"]: v for lbl, v in samples_of(parsed, "sendfleet_ip_drained")}
    assert drained == {"198.51.100.70": 1, "198.51.100.72": 0, "198.51.100.73": 0}
    listed = {lbl["ip"]: v for lbl, v in samples_of(parsed, "sendfleet_ip_listed")}
    assert listed == {"198.51.100.70": 0, "198.51.100.72": -1}
    weight = {lbl["ip"]: v for lbl, v in samples_of(parsed, "sendfleet_ip_weight")}
    assert weight == {"198.51.100.70": 0, "198.51.100.72": 20, "198.51.100.73": 20}
    assert samples_of(parsed, "sendfleet_ip_warmup_day") == [({"ip": "198.51.100.70", "pool": "t"}, 1.0)]
    assert samples_of(parsed, "sendfleet_monitor_last_run_timestamp_seconds") == [({}, 10.0)]


def test_agent_and_postfix_role_write_the_same_selection() -> None:
    """The seam between the two writers of main.cf: for the same warm-up plan and drained IPs the monitor plans
    no change to what the postfix role wrote, and a drain it applies is what the role writes on its next run."""
    from tests.unit.plugins import load_plugin

    net = load_plugin("filter", "sendfleet_net")
    warm = load_plugin("filter", "sendfleet_warmup")
    ips = [{"ip": "198.51.100.70", "pool": "t", "warmup_start": "2026-12-01"},
           {"ip": "198.51.100.72", "pool": "t"}, {"ip": "198.51.100.73", "pool": "t"},
           {"ip": "198.51.100.80", "pool": "m", "warmup_start": "2026-11-20"}]
    plan = warm.sf_warmup_plan(ips, "mta1", {}, "2026-12-02", "sf")
    cfg = agent.Config({"zones_file": "z", "members": plan}, "t")
    defaults = {"concurrency_limit": 5, "rate_delay": "0s", "recipient_limit": 50}

    def role_main_cf(drained: set[str]) -> dict[str, str]:
        entries = warm.sf_apply_drained(plan, sorted(drained))
        params = {"sender_dependent_default_transport_maps": ", ".join(net.sf_pool_maps(entries))}
        for entry in entries:
            params.update(net.sf_transport_params(entry, "sf", defaults))
        return params

    for drained in (set(), {"198.51.100.72"}, {"198.51.100.70", "198.51.100.73"}):
        changes, _ = agent.selection_plan(cfg, drained, {}, role_main_cf(drained))
        assert changes == {}, drained
    before = role_main_cf(set())
    changes, _ = agent.selection_plan(cfg, {"198.51.100.72"}, {}, before)
    assert {**before, **changes} == role_main_cf({"198.51.100.72"})
    assert changes["sender_dependent_default_transport_maps"] != before["sender_dependent_default_transport_maps"]


def test_warmup_limits_and_throttles_reach_the_class_transports(tmp_path: Any) -> None:
    import json

    classes = {"gmail": {"mx_suffixes": ["gmail.test"], "limits": {"connections": 3, "messages_per_connection": 20}},
               "other": {"limits": {"connections": 6, "messages_per_connection": 100}}}
    state = tmp_path / "shaping.json"
    cfg = config(shaping={"classes": classes, "state_file": str(state)})
    changes, record = agent.selection_plan(cfg, set(), {}, {"sender_dependent_default_transport_maps": MAPS})
    # the warming IP's limits of the day on its gmail transport too
    assert changes["sf_198_51_100_70_gmail_destination_rate_delay"] == "129s"
    assert changes["sf_198_51_100_70_gmail_destination_concurrency_limit"] == "1"
    assert "sf_198_51_100_72_gmail_destination_concurrency_limit" not in changes
    # a throttle in force with fewer connections than the class: per destination on that path
    throttle = {"ip": "198.51.100.72", "class": "gmail", "status": "throttled", "until": 4e9, "since": 1.0,
                "limits": {"connections": 1}}
    state.write_text(json.dumps({"paths": [throttle]}))
    param = "sf_198_51_100_72_gmail_destination_concurrency_limit"
    current = {"sender_dependent_default_transport_maps": MAPS, param: "3"}
    changes, record = agent.selection_plan(cfg, set(), {}, current)
    assert changes["sf_198_51_100_72_gmail_destination_concurrency_limit"] == "1"
    # the throttle ends: the value found before (the postfix role's) comes back
    state.write_text(json.dumps({"paths": []}))
    applied = {**current, **{k: v for k, v in changes.items() if v is not None}}
    changes, _ = agent.selection_plan(cfg, set(), record, applied)
    assert changes["sf_198_51_100_72_gmail_destination_concurrency_limit"] == "3"


def test_an_ip_suspended_for_class_other_leaves_the_randmaps_only(tmp_path: Any) -> None:
    import json

    classes = {"gmail": {"mx_suffixes": ["gmail.test"], "limits": {"connections": 3, "messages_per_connection": 20}},
               "other": {"limits": {"connections": 6, "messages_per_connection": 100}}}
    state = tmp_path / "shaping.json"
    cfg = config(shaping={"classes": classes, "state_file": str(state)})
    paths = [{"ip": "198.51.100.72", "class": "other", "status": "suspended", "until": 4e9, "since": 1.0},
             {"ip": "198.51.100.73", "class": "other", "status": "throttled", "until": 4e9, "since": 1.0,
              "limits": {"connections": 2}}]
    state.write_text(json.dumps({"paths": paths}))
    changes, _ = agent.selection_plan(cfg, set(), {}, {"sender_dependent_default_transport_maps": MAPS})
    maps = changes["sender_dependent_default_transport_maps"]
    assert maps is not None and "sf_198_51_100_72" not in maps and maps.count("sf_198_51_100_73") == 20
    assert changes["sf_198_51_100_73_destination_concurrency_limit"] == "2"  # the IP's own transport
    assert agent.suspended(cfg) == ["198.51.100.72"]


def test_delivery_series_are_bounded_by_ips_classes_and_statuses() -> None:
    classes = {"gmail": {}, "yahoo": {}, "outlook": {}, "other": {}}
    cfg = config(shaping={"classes": classes})
    book = maillog.DeliveryBook(cfg.transports, cfg.classes)
    statuses = ("sent", "deferred", "bounced")
    reply = "(host mx[198.51.100.20] said: 450 4.2.0 mailbox busy (in reply to RCPT TO command))"
    for i in range(5000):  # 5,000 distinct recipient domains through the IP's own transport
        st = statuses[i % 3]
        line = (f"Q{i}: to=<u@d{i}.example>, relay=mx[198.51.100.20]:25, delay=0.1, dsn=2.0.0, status={st}"
                + (f" {reply}" if st != "sent" else " (250 ok)"))
        d = maillog.parse_delivery(f"postfix/sf_198_51_100_{70 + i % 4}/smtp", line, float(i))
        assert d is not None
        book.add(d)
    rows = samples_of(parse(agent.delivery_metrics(book, cfg, 1.0)), "sendfleet_delivery_total")
    ips = {m["ip"] for m in cfg.members} | {"198.51.100.71"}  # .71: not a member, counted under its name
    assert len(rows) <= len(ips) * len(classes) * len(statuses)
    assert len(book.totals) <= len(ips) * len(statuses)  # every one of them is class other
    assert {lbl["provider"] for lbl, _ in rows} == set(classes)
    assert sum(n for lbl, n in rows if lbl["provider"] == "other") == 5000
    assert sum(n for lbl, n in rows if lbl["ip"] == "198.51.100.70" and lbl["status"] == "deferred") == 417
    reasons = samples_of(parse(agent.delivery_metrics(book, cfg, 1.0)), "sendfleet_delivery_reason_total")
    assert {lbl["provider"] for lbl, _ in reasons} == {"other"}


def test_interval_and_thresholds_come_from_the_config() -> None:
    assert [agent.timespan_seconds(v, "x") for v in ("15min", "30s", "1h", "2d", "90", 45, "5 min", "1m")] == \
        [900, 30, 3600, 172800, 90, 45, 300, 60]
    for bad in ("", "min", "15 fortnights", "0s", "-5s", "1.5h"):
        with pytest.raises(UsageError, match=r"cfg\.json: interval"):
            agent.Config({"zones_file": "z", "interval": bad}, "cfg.json")
    with pytest.raises(UsageError, match="bad monitor config"):
        agent.Config({"zones_file": "z", "queue": {"age_threshold": 0}}, "cfg.json")
    cfg = config(interval="20s", queue={"age_threshold": 120})
    monitor = parse(agent.monitor_metrics(cfg, {}))
    assert samples_of(monitor, "sendfleet_monitor_interval_seconds") == [({}, 20.0)]
    assert samples_of(parse(agent.queue_metrics(None, cfg, 5.0)), "sendfleet_queue_age_threshold_seconds") == \
        [({}, 120.0)]
    defaults = config()
    assert (defaults.interval_seconds, defaults.queue_age_threshold, defaults.queue) == (900, 3600, True)
    with pytest.raises(UsageError, match="unknown rate 'bounces'"):
        config(alert_min_volume={"bounces": 5})
    book = maillog.DeliveryBook({}, ())
    volumes = {lbl["rate"]: v for lbl, v in samples_of(
        parse(agent.delivery_metrics(book, config(alert_min_volume={"complaint": 50}), 1.0)),
        "sendfleet_alert_min_volume")}
    assert volumes == {"deferral": 20, "bounce": 100, "complaint": 50}


def test_delivery_per_sender_domain_and_refusals_are_bounded() -> None:
    cfg = config(sender_domains={"Shop.Test": "Bounces.Shop.Test"})
    book = maillog.DeliveryBook(cfg.transports, cfg.classes, cfg.sender_domains)
    for i in range(300):  # 300 envelope senders at 300 domains: only shop.test keeps its name
        sender = "b+a=gmail.test@bounces.shop.test" if i % 3 == 0 else f"news@d{i}.test"
        book.feed("postfix/qmgr", f"Q{i}: from=<{sender}>, size=10, nrcpt=1 (queue active)", 1.0)
        book.feed("postfix/sf_198_51_100_72/smtp",
                  f"Q{i}: to=<u@r{i}.test>, relay=mx[198.51.100.20]:25, delay=0.1, dsn=2.0.0, status=sent (250 ok)",
                  1.0)
    book.feed("postfix/smtpd", "NOQUEUE: reject: RCPT from c[198.51.100.5]: 550 5.1.1 <u@r.test>: suppressed "
              "since 2026-12-01 (complaint); from=<b+u=r.test@bounces.shop.test> to=<u@r.test> proto=ESMTP", 1.0)
    text = parse(agent.delivery_metrics(book, cfg, 1.0))
    rows = {(lbl["sender_domain"], lbl["status"]): v
            for lbl, v in samples_of(text, "sendfleet_delivery_sender_domain_total")}
    assert rows == {("shop.test", "sent"): 100, ("shop.test", "deferred"): 0, ("shop.test", "bounced"): 0,
                    ("other", "sent"): 200, ("other", "deferred"): 0, ("other", "bounced"): 0}
    assert sorted(samples_of(text, "sendfleet_suppression_refusals_total"), key=str) == \
        [({"sender_domain": "other"}, 0.0), ({"sender_domain": "shop.test"}, 1.0)]


def test_queue_classification_is_cached_and_bounded(tmp_path: Any) -> None:
    cfg = config(shaping={"classes": {"gmail": {"mx_suffixes": ["google.test"]}}},
                 queue={"lookups_per_run": 2, "class_cache_file": str(tmp_path / "classes.json")})
    asked: list[str] = []

    def lookup(domain: str) -> tuple[str | None, float]:
        asked.append(domain)
        return ("gmail" if domain.startswith("g") else "other", 60.0) if domain != "gone.test" else (None, 0)

    domains = ["g1.test", "gone.test", "g2.test", "x.test"]
    assert agent.classify_domains(cfg, domains, 100.0, lookup) == \
        {"g1.test": "gmail", "gone.test": "other", "g2.test": "other", "x.test": "other"}
    assert asked == ["g1.test", "gone.test"]  # two lookups per run, the rest waits
    asked.clear()
    out = agent.classify_domains(cfg, domains, 110.0, lookup)
    assert asked == ["gone.test", "g2.test"]  # g1 is cached; DNS could not say for gone.test: asked again
    assert out["g2.test"] == "gmail"
    asked.clear()
    agent.classify_domains(cfg, ["g1.test"], 200.0, lookup)  # expired after its 60 s
    assert asked == ["g1.test"]


def test_read_queue_writes_the_metrics_or_says_it_could_not(tmp_path: Any, monkeypatch: Any) -> None:
    import json

    from sendfleet.errors import CannotCheckError

    cfg = config(textfile_dir=str(tmp_path), shaping={"classes": {"gmail": {}}},
                 queue={"lookups_per_run": 0, "class_cache_file": str(tmp_path / "c.json")})
    (tmp_path / "c.json").write_text(json.dumps({"gmail.test": ["gmail", 4e9]}))
    now = __import__("time").time()
    lines = [json.dumps({"queue_name": "deferred", "queue_id": f"D{i}", "arrival_time": now - 100 * (i + 1),
                         "message_size": 1, "sender": "", "recipients": [{"address": f"u@{d}"}]})
             for i, d in enumerate(["gmail.test", "gmail.test", "other.test"])]
    monkeypatch.setattr(agent, "postqueue_json", lambda cfg: "\n".join(lines) + "\n")
    summary = agent.read_queue(cfg)
    assert summary is not None and summary.deferred_by_provider == {"gmail": 2, "other": 1}
    text = parse((tmp_path / "sendfleet_queue.prom").read_text())
    assert dict((lbl["queue"], v) for lbl, v in samples_of(text, "sendfleet_queue_messages"))["deferred"] == 3
    oldest = dict((lbl["queue"], v) for lbl, v in samples_of(text, "sendfleet_queue_oldest_seconds"))
    assert 299 <= oldest["deferred"] < 330 and oldest["active"] == 0
    assert samples_of(text, "sendfleet_queue_check_ok") == [({}, 1.0)]

    def down(cfg: Any) -> str:
        raise CannotCheckError("postqueue -j failed: fatal: Queue report unavailable - mail system is down")

    monkeypatch.setattr(agent, "postqueue_json", down)
    assert agent.read_queue(cfg) is None
    text = parse((tmp_path / "sendfleet_queue.prom").read_text())
    assert samples_of(text, "sendfleet_queue_check_ok") == [({}, 0.0)]
    assert samples_of(text, "sendfleet_queue_messages") == []


def test_delivery_run_counts_sender_domains_and_reads_the_queue(tmp_path: Any, monkeypatch: Any) -> None:
    import json
    import os
    import time
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%b %d %H:%M:%S")
    log = tmp_path / "mail.log"
    log.write_text("".join(f"{stamp} mta1 {ident}[1]: {msg}\n" for ident, msg in [
        ("postfix/qmgr", "4QA1z: from=<b+a=gmail.test@bounces.shop.test>, size=900, nrcpt=1 (queue active)"),
        ("postfix/sf_198_51_100_72_gmail/smtp", "4QA1z: to=<a@gmail.test>, relay=mx[198.51.100.20]:25, delay=0.2, "
         "dsn=2.0.0, status=sent (250 2.0.0 Ok)"),
        ("postfix/qmgr", "4QA1z: removed"),
        ("postfix/smtpd", "NOQUEUE: reject: RCPT from c[198.51.100.5]: 550 5.1.1 <x@gmail.test>: suppressed since "
         "2026-12-01 (hard-bounce); from=<b+x=gmail.test@bounces.shop.test> to=<x@gmail.test> proto=ESMTP"),
    ]))
    queue_line = json.dumps({"queue_name": "deferred", "queue_id": "4QB2z", "arrival_time": int(time.time()) - 700,
                             "message_size": 1, "sender": "", "recipients": [{"address": "u@yahoo.test"}]})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "postqueue"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' '{queue_line}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = agent.Config({"zones_file": "z", "log_source": str(log), "delivery_file": str(tmp_path / "delivery.json"),
                        "textfile_dir": str(tmp_path), "sender_domains": {"shop.test": "bounces.shop.test"},
                        "shaping": {"classes": {"gmail": {}, "yahoo": {}}},
                        "queue": {"lookups_per_run": 0, "class_cache_file": str(tmp_path / "classes.json")},
                        "members": [{"ip": "198.51.100.72", "pool": "p", "transport": "sf_198_51_100_72"}]}, "c")
    assert agent.cmd_delivery(cfg) == 0
    data = json.loads((tmp_path / "delivery.json").read_text())
    assert data["sender_domain_totals"] == {"shop.test": {"sent": 1, "deferred": 0, "bounced": 0}}
    assert data["suppression_refusals"] == {"shop.test": 1} and data["envelopes"] == {}
    delivery = parse((tmp_path / "sendfleet_delivery.prom").read_text())
    assert ({"sender_domain": "shop.test", "status": "sent"}, 1.0) in \
        samples_of(delivery, "sendfleet_delivery_sender_domain_total")
    queue = parse((tmp_path / "sendfleet_queue.prom").read_text())
    assert ({"queue": "deferred"}, 1.0) in samples_of(queue, "sendfleet_queue_messages")
    assert ({"provider": "other"}, 1.0) in samples_of(queue, "sendfleet_queue_deferred_messages")  # no lookup left
    oldest = dict((lbl["queue"], v) for lbl, v in samples_of(queue, "sendfleet_queue_oldest_seconds"))
    assert 700 <= oldest["deferred"] < 760
