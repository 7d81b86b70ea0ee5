"""The dnsbl_monitor role: timers running, state and metrics for every in-service IP, and Postfix's pool
selection agreeing with the monitor (a drained IP out of its pool's randmap, every other in-service IP in)."""

from __future__ import annotations

import json
from typing import Any

from sendfleet.core.metrics import parse, samples_of
from sendfleet.core.poolmap import randmap_members, transport_name
from tests.infra.conftest import Expect, postconf


def _state_dir(expect: Expect) -> str:
    return str(expect.var("dnsbl_monitor", "dnsbl_monitor_state_dir"))


def _textfile_dir(expect: Expect) -> str:
    return str(expect.var("dnsbl_monitor", "dnsbl_monitor_textfile_dir"))


def test_monitor_timers_active(host: Any, expect: Expect) -> None:
    for timer in ("sendfleet-monitor.timer", "sendfleet-delivery.timer"):
        svc = host.service(timer)
        assert svc.is_enabled and svc.is_running, f"{expect.name}: {timer} is not enabled and active"


def test_monitor_state_and_metrics_cover_every_in_service_ip(host: Any, expect: Expect) -> None:
    state_file = host.file(f"{_state_dir(expect)}/state.json")
    assert state_file.exists, f"{expect.name}: no monitor state yet ({state_file.path}): the check never ran"
    state = json.loads(state_file.content_string)
    ips = {str(s.ip) for s in expect.in_service}
    assert ips <= set(state.get("ips", {})), f"{expect.name}: IPs not watched: {sorted(ips - set(state['ips']))}"
    prom = host.file(f"{_textfile_dir(expect)}/sendfleet_monitor.prom")
    assert prom.exists, f"{expect.name}: no {prom.path}"
    drained = {lbl["ip"] for lbl, _ in samples_of(parse(prom.content_string), "sendfleet_ip_drained")}
    assert ips <= drained, f"{expect.name}: sendfleet_ip_drained missing for {sorted(ips - drained)}"


def test_pool_selection_agrees_with_the_monitor(host: Any, expect: Expect) -> None:
    state_file = host.file(f"{_state_dir(expect)}/state.json")
    states = json.loads(state_file.content_string).get("ips", {}) if state_file.exists else {}
    maps = postconf(host, "sender_dependent_default_transport_maps")["sender_dependent_default_transport_maps"]
    members = {m for group in randmap_members(maps) for m in group}
    prefix = expect.var("postfix", "postfix_transport_prefix")
    problems = []
    for sip in expect.in_service:
        ip = str(sip.ip)
        transport = transport_name(ip, prefix)
        is_drained = states.get(ip, {}).get("status") == "drained"
        if is_drained and transport in members:
            problems.append(f"{ip} is drained (listed) but {transport} is still in its pool's randmap")
        if not is_drained and transport not in members:
            problems.append(f"{ip} is in service but {transport} is in no pool's randmap")
    assert not problems, f"{expect.name}: " + "; ".join(problems)
