"""Prometheus and Alertmanager on the lab (host mon), alerts recorded by the lab's receiver on the sink, on mta3,
everything restored in `finally`:

- an in-service IP listed in the lab's blocklist: SendfleetIPListed reaches the receiver within two scrape +
  evaluation cycles of the check that saw it; `sendfleet status` shows the drained IP and the firing alert in both
  formats; unlisted and restored, the alert resolves;
- mta3's monitor timer stopped: SendfleetMonitorStale fires; started again, it resolves;
- the sink answering 421 to mta3's IPs: SendfleetDeferralRate fires; with the cause gone and mail flowing, it resolves;
- the sink's MX down: SendfleetQueueOldest fires for mta3; back up and the queue flushed, it resolves.
The lab inventory sets 5 s scrape and evaluation intervals, 20 s monitor checks and a 60 s queue-age threshold.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from sendfleet.lab import alerts, control
from tests.lab.conftest import LabHandle, sendfleet
from tests.lab.helpers import host_address, inventory_model, make_message, resume_shaping, submit
from tests.lab.test_monitor import wait_dns

pytestmark = pytest.mark.lab

HOST = "mta3"
SCRAPE = EVALUATION = 5.0  # the lab inventory's monitoring_scrape_interval / monitoring_evaluation_interval
GROUP_WAIT = 2.0  # its monitoring_alert_route.group_wait: Alertmanager's wait before it sends a new group


def host_ips(lab: LabHandle, pool: str | None = None) -> list[str]:
    _, hosts = inventory_model(lab.inventory_dir)
    return [str(e["ip"]) for e in hosts[HOST] if pool is None or e["pool"] == pool]


def check(lab: LabHandle) -> None:
    """One monitor check on mta3 (what its timer runs), waited for."""
    lab.ssh(HOST, "systemctl start sendfleet-monitor.service")


@pytest.fixture(scope="module")
def mon(converged: LabHandle) -> Iterator[LabHandle]:
    # Prometheus answers once the converge is done; the receiver is reachable
    yield converged
    converged.ssh(HOST, "systemctl start sendfleet-monitor.timer sendfleet-delivery.timer", check=False)


def test_listed_ip_fires_within_two_cycles_and_status_shows_it(mon: LabHandle) -> None:
    victim = host_ips(mon, "transactional")[0]  # mta3 has three: draining one leaves the pool in service
    control.list_entry("zen.lab.test", victim, reason="listed by the monitoring lab test")
    try:
        wait_dns(victim, listed=True)
        check(mon)
        seen = time.time()  # the check wrote sendfleet_ip_listed == 1 to the textfile
        alert = alerts.wait_for_alert("SendfleetIPListed", "firing", {"ip": victim, "host": HOST},
                                      timeout=120, since=seen - 1)
        latency = alert.received - seen
        # scraped within a scrape interval, evaluated within an evaluation interval, twice over at most, plus
        # Alertmanager's group wait
        assert latency <= 2 * (SCRAPE + EVALUATION) + GROUP_WAIT + 1, f"alert after {latency:.1f} s"
        assert alerts.wait_for_alert("SendfleetIPDrained", "firing", {"ip": victim}, timeout=60, since=seen - 1)

        def status() -> tuple[dict[str, object], str]:
            data = json.loads(sendfleet("status", "-i", str(mon.inventory_dir), "--format", "json").stdout)
            return data, sendfleet("status", "-i", str(mon.inventory_dir)).stdout

        deadline = time.monotonic() + 60
        while True:
            data, table = status()
            host = next(h for h in data["hosts"] if h["host"] == HOST)  # type: ignore[union-attr]
            entry = next(e for e in host["ips"] if e["ip"] == victim)
            firing = [a for a in data["alerts"] if a["labels"].get("alertname") == "SendfleetIPListed"  # type: ignore[union-attr]
                      and a["labels"].get("ip") == victim]
            if (entry["drained"] and firing) or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert entry["drained"] and entry["state"] == "drained", entry
        assert firing, data["alerts"]
        line = next(ln for ln in table.splitlines() if victim in ln and HOST in ln)
        assert "drained" in line
        assert "SendfleetIPListed" in table
    finally:
        control.unlist_entry("zen.lab.test", victim)
    wait_dns(victim, listed=False)
    resolved_from = time.time()
    for _ in range(6):  # restore_after clean checks bring it back
        check(mon)
        if json.loads(mon.ssh(HOST, "cat /var/lib/sendfleet/monitor/state.json").stdout)["ips"][victim]["status"] \
                != "drained":
            break
    assert alerts.wait_for_alert("SendfleetIPListed", "resolved", {"ip": victim}, timeout=90, since=resolved_from)
    assert alerts.wait_for_alert("SendfleetIPDrained", "resolved", {"ip": victim}, timeout=90, since=resolved_from)


def test_stopped_monitor_fires_stale_and_resolves(mon: LabHandle) -> None:
    start = time.time()
    mon.ssh(HOST, "systemctl stop sendfleet-monitor.timer")
    try:
        # three 20 s intervals without a check, then a scrape and an evaluation
        assert alerts.wait_for_alert("SendfleetMonitorStale", "firing", {"host": HOST}, timeout=150, since=start)
    finally:
        mon.ssh(HOST, "systemctl start sendfleet-monitor.timer")
    check(mon)
    back = time.time()
    assert alerts.wait_for_alert("SendfleetMonitorStale", "resolved", {"host": HOST}, timeout=90, since=back - 1)


def test_deferrals_fire_the_deferral_alert_and_it_resolves(mon: LabHandle) -> None:
    ips = host_ips(mon, "transactional")
    tag = f"defer-{uuid.uuid4().hex[:8]}"
    server = host_address(mon.inventory_dir, HOST)
    start = time.time()
    for ip in ips:
        control.sink_reply("smallbiz.test", "421 4.3.2 system busy, try again later", client_ip=ip)
    try:
        # one attempt each (Postfix retries after minutes): enough per IP for the lab's minimum volume (5)
        submit(server, [make_message("app@shop.test", f"{tag}-{j}@smallbiz.test", tag) for j in range(30)])
        alerts.wait_for_alert("SendfleetDeferralRate", "firing", {"host": HOST, "provider": "other"}, timeout=240,
                              since=start)
        time.sleep(2 * (SCRAPE + EVALUATION))  # the other IPs' alerts of the same group
        firing = {a.labels["ip"] for a in alerts.read_alerts() if a.name == "SendfleetDeferralRate"
                  and a.status == "firing" and a.labels.get("host") == HOST and a.received >= start}
        assert firing <= set(ips), firing
    finally:
        for ip in ips:
            control.sink_reply("smallbiz.test", None, client_ip=ip)
        resume_shaping(lambda command: mon.ssh(HOST, command))
    # the deferred mail goes out and more mail flows: the share of deferrals over 10 minutes falls under 20 %
    after = time.time()
    mon.ssh(HOST, "postqueue -f")
    for i in range(5):
        submit(server, [make_message("app@shop.test", f"{tag}-ok-{i}-{j}@smallbiz.test", f"{tag}-ok")
                        for j in range(40)])
    for ip in firing:
        assert alerts.wait_for_alert("SendfleetDeferralRate", "resolved", {"host": HOST, "ip": ip}, timeout=240,
                                     since=after)


def test_sink_down_fires_queue_age_and_resolves(mon: LabHandle) -> None:
    tag = f"qage-{uuid.uuid4().hex[:8]}"
    start = time.time()
    mon.ssh("sink", "systemctl stop postfix")
    try:
        submit(host_address(mon.inventory_dir, HOST), [make_message("app@shop.test", f"{tag}@smallbiz.test", tag)])
        # the message waits past the lab's 60 s threshold
        assert alerts.wait_for_alert("SendfleetQueueOldest", "firing", {"host": HOST}, timeout=180, since=start)
    finally:
        mon.ssh("sink", "systemctl start postfix")
    mon.ssh(HOST, "postqueue -f")
    back = time.time()
    assert alerts.wait_for_alert("SendfleetQueueOldest", "resolved", {"host": HOST}, timeout=120, since=back - 1)
    assert "Mail queue is empty" in mon.ssh(HOST, "postqueue -p").stdout
