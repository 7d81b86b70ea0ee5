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
