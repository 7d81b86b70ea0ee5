"""The alert rules the monitoring role installs: every alert is labelled and annotated, has a promtool case
where it fires (per severity) and one where it does not, and reads metrics the agent and the shaper write.
(`promtool test rules` itself runs in scripts/test.sh.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "roles/monitoring/files/rules/sendfleet.yml"
TESTS = sorted((REPO / "roles/monitoring/files/rules/tests").glob("*.yml"))
PRODUCERS = [REPO / "scripts/sendfleet/monitor/agent.py", REPO / "scripts/sendfleet/monitor/shaper.py",
             REPO / "scripts/sendfleet/monitor/dnsdrift.py"]
# written by other parts of sendfleet (the feedback processor)
ELSEWHERE = ("sendfleet_feedback_",)


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r for g in data["groups"] for r in g["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def test_every_alert_has_a_severity_and_says_what_and_where() -> None:
    names = set()
    for rule in alerts():
        names.add(rule["alert"])
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert set(rule["annotations"]) >= {"summary", "description"}, rule["alert"]
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "$labels." in text, f"{rule['alert']}: the annotations name no host, IP, provider or domain"
    assert names == {
        "SendfleetIPListed", "SendfleetIPDrained", "SendfleetDrainBlocked", "SendfleetPathSuspended",
        "SendfleetMonitorStale", "SendfleetZoneBroken", "SendfleetDeferralRate", "SendfleetQueueOldest",
        "SendfleetBounceRate", "SendfleetComplaintRate", "SendfleetDNSDrift", "SendfleetDNSCheckFailing",
        "SendfleetFeedbackDeadLetters",
    }


def test_every_alert_fires_per_severity_and_stays_quiet_in_the_promtool_tests() -> None:
    firing: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    assert TESTS
    cases = []
    for path in TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert [(path.parent / f).resolve() for f in doc["rule_files"]] == [RULES.resolve()], path
        cases += doc["tests"]
    for case in cases:
        for check in case.get("alert_rule_test") or []:
            expected = check.get("exp_alerts") or []
            if not expected:
                quiet.add(check["alertname"])
            for exp in expected:
                firing.add((check["alertname"], exp["exp_labels"]["severity"]))
    wanted = {(r["alert"], r["labels"]["severity"]) for r in alerts()}
    assert wanted - firing == set(), "alerts without a firing case"
    assert {a for a, _ in wanted} - quiet == set(), "alerts without a non-firing case"


def test_rules_read_metrics_the_agent_and_the_shaper_write() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in PRODUCERS)
    recorded = {r["record"] for r in rules() if "record" in r}
    used = set()
    for rule in rules():
        used |= set(re.findall(r"\b(sendfleet[a-z0-9_:]*)", rule["expr"]))
    for name in sorted(used - recorded):
        if name.startswith(ELSEWHERE):
            continue
        assert f'"{name}"' in source, f"{name}: no such metric in the agent or the shaper"
    assert recorded <= used, "a recording rule no rule reads"
