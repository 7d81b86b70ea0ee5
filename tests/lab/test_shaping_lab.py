"""Per-provider shaping on the lab, on mta2 (its transactional pool: three IPs), everything restored in `finally`:

- a custom domain whose MX is under the Gmail class's suffix is classified gmail and held to its limits; under load
  the sink never sees more concurrent transactions per (client IP, class) than the class allows, and the Gmail-class
  and default limits differ in force;
- a 421 4.7.28 to one IP for the Gmail class suspends that path (per the lab's rule, 90 s), the pool's Gmail mail
  flows through its other IPs, that IP's Yahoo and default mail is unaffected, the path resumes by itself, nothing
  is lost or bounced;
- a 550 5.7.1 S3150 at the Outlook class suspends that path only; the operator resumes it with `sendfleet shaping`;
- a reply quoting a blocklist drains the IP from every pool and the DNSBL monitor's restore rule brings it back;
- a warming IP at its Gmail-class cap spills its Gmail traffic to the pool's warm IPs;
- site.yml --check --diff reports changed=0 while paths are suspended and throttled.
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sendfleet.lab import control
from tests.lab.conftest import LabHandle, sendfleet
from tests.lab.helpers import host_address, inventory_model, make_message, recap, run_playbook, submit, wait_for

pytestmark = pytest.mark.lab

HOST = "mta2"
POOL = "transactional"
SENDER = "app@shop.test"  # a sender domain of the transactional pool
CONFIG = "/etc/sendfleet/monitor/config.json"
PYTHON = "/opt/sendfleet/venv/bin/python"
CLASS_OF = {"gmail.test": "gmail", "acme.test": "gmail", "yahoo.test": "yahoo", "outlook.test": "outlook",
            "contoso.test": "outlook", "smallbiz.test": "other"}


def pool_ips(lab: LabHandle) -> list[str]:
    _, hosts = inventory_model(lab.inventory_dir)
    return [str(e["ip"]) for e in hosts[HOST] if e["pool"] == POOL]


def send(lab: LabHandle, tag: str, recipients: list[str], sessions: int = 1) -> None:
    """Submit one message per recipient to mta2 (from the app address), over `sessions` SMTP sessions."""
    server = host_address(lab.inventory_dir, HOST)
    msgs = [make_message(SENDER, r, f"{tag}-{i}") for i, r in enumerate(recipients)]
    for i in range(sessions):
        submit(server, msgs[i::sessions])


def status(lab: LabHandle) -> list[dict[str, Any]]:
    out = sendfleet("shaping", "status", "-i", str(lab.inventory_dir), "--host", HOST, "--format", "json").stdout
    return list(json.loads(out)["paths"])


def state_of(lab: LabHandle, ip: str, klass: str) -> dict[str, Any] | None:
    return next((p for p in status(lab) if p["ip"] == ip and p["class"] == klass), None)


def wait_until(what: Callable[[], Any], deadline_s: float, every: float = 2.0) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        got = what()
        if got or time.monotonic() > end:
            return got
        time.sleep(every)


def resume_all(lab: LabHandle) -> None:
    """Every path of mta2 back to normal (operator resume), whatever a failed test left."""
    for p in status(lab):
        if p["state"] in ("suspended", "throttled"):
            sendfleet("shaping", "resume", "-i", str(lab.inventory_dir), "--ip", p["ip"], "--class", p["class"],
                      check=False)


def bounced(lab: LabHandle, tag: str) -> list[str]:
    """mta2's log lines of bounced deliveries of this test's recipients."""
    out = lab.ssh(HOST, f"journalctl -q -o cat SYSLOG_FACILITY=2 --since -2h | grep -F {shlex.quote(tag)} "
                        "| grep -F 'status=bounced' || true").stdout
    return out.splitlines()


@pytest.fixture
def shaping(converged: LabHandle) -> Iterator[LabHandle]:
    lab = converged
    assert lab.ssh(HOST, "systemctl is-active sendfleet-shaper", check=False).stdout.strip() == "active"
    resume_all(lab)
    try:
        yield lab
    finally:
        for (ip, target) in list(control.sink_replies()):
            if target in CLASS_OF:
                control.sink_reply(target, None, client_ip=ip)
        resume_all(lab)
        lab.ssh(HOST, "postqueue -f", check=False)


def test_custom_domain_is_classified_by_mx_and_limits_hold_under_load(shaping: LabHandle) -> None:
    lab = shaping
    ips = pool_ips(lab)
    tag = f"shp-load-{uuid.uuid4().hex[:8]}"
    per_domain = {"gmail.test": 600, "acme.test": 600, "yahoo.test": 1000, "outlook.test": 500, "contoso.test": 500,
                  "smallbiz.test": 1200}  # over a thousand messages per class
    recipients = [f"{tag}-{d.split('.')[0]}{i}@{d}" for d, n in per_domain.items() for i in range(n)]
    control.sink_concurrency(reset=True)
    control.sink_class_concurrency(CLASS_OF, reset=True)
    send(lab, tag, recipients, sessions=4)
    got = wait_for(tag, len(recipients), deadline_s=600)
    assert len(got) == len(recipients), f"{len(got)}/{len(recipients)} arrived"
    peaks = control.sink_class_concurrency()
    limits = {p["class"]: p["limits"]["connections"] for p in status_all(lab)}
    print(f"peak concurrent transactions per (client IP, class): {sorted(peaks.items())}; limits {limits}")
    for (ip, klass), peak in peaks.items():
        if ip in ips:
            assert peak <= limits[klass], f"{ip} {klass}: {peak} concurrent > the class's {limits[klass]}"
    for klass in ("gmail", "yahoo", "outlook", "other"):
        assert max(peaks.get((ip, klass), 0) for ip in ips) >= 1, f"no {klass} traffic seen: {peaks}"
    # the Gmail-class limit is what holds it (reached, never passed), not something stricter
    assert max(peaks.get((ip, "gmail"), 0) for ip in ips) == limits["gmail"], peaks
    # the default limit is in force and differs: other-class mail ran more connections than Gmail's limit allows
    assert max(peaks.get((ip, "other"), 0) for ip in ips) > limits["gmail"], peaks
    # acme.test (MX under the Gmail class's suffix) left through the Gmail-class transports
    log = lab.ssh(HOST, f"journalctl -q -o short SYSLOG_FACILITY=2 --since -30min | grep -F '@acme.test>' "
                        f"| grep -F {shlex.quote(tag)} | grep -F status=sent").stdout.splitlines()
    assert log and all("_gmail/smtp[" in line for line in log), log[:3]


def status_all(lab: LabHandle) -> list[dict[str, Any]]:
    out = sendfleet("shaping", "status", "-i", str(lab.inventory_dir), "--host", HOST, "--all", "--format",
                    "json").stdout
    return list(json.loads(out)["paths"])


def test_421_4728_suspends_one_path_the_others_carry_and_it_resumes(shaping: LabHandle) -> None:
    lab = shaping
    ips = pool_ips(lab)
    victim = ips[0]
    tag = f"shp-421-{uuid.uuid4().hex[:8]}"
    control.sink_reply("gmail.test", "421 4.7.28 Our system has detected an unusual rate of unsolicited mail "
                       "originating from your IP address", client_ip=victim)
    started = time.monotonic()
    first = [f"{tag}-a{i}@gmail.test" for i in range(30)]
    send(lab, f"{tag}-a", first)
    path = wait_until(lambda: (state_of(lab, victim, "gmail") or {}).get("state") == "suspended"
                      and state_of(lab, victim, "gmail"), 120)
    assert path, f"(victim {victim}, gmail) not suspended within 2 minutes: {status(lab)}"
    print(f"suspended after {time.monotonic() - started:.0f} s: {path}")
    assert path["rule"] == "lab-gmail-unusual-rate" and "4.7.28" in path["reply"]
    assert state_of(lab, victim, "yahoo") is None and state_of(lab, victim, "other") is None
    # while suspended: Gmail mail through the other IPs; the victim's Yahoo and default mail unaffected
    second = [f"{tag}-b{i}@gmail.test" for i in range(40)]
    others = [f"{tag}-c{i}@{d}" for i in range(30) for d in ("yahoo.test", "smallbiz.test")]
    send(lab, f"{tag}-b", second)
    send(lab, f"{tag}-c", others)
    got_b = wait_for(f"{tag}-b", len(second), deadline_s=180)
    got_c = wait_for(f"{tag}-c", len(others), deadline_s=180)
    assert len(got_b) == len(second) and len(got_c) == len(others)
    assert not any(m.client_ip == victim for m in got_b), Counter(m.client_ip for m in got_b)
    assert {m.client_ip for m in got_b} <= set(ips) - {victim}
    by_class = Counter((m.client_ip, m.rcpt_to[0].split("@")[1]) for m in got_c)
    assert by_class[(victim, "yahoo.test")] > 0 and by_class[(victim, "smallbiz.test")] > 0, by_class
    # the sink stops refusing; the path resumes by itself after the rule's 90 s
    control.sink_reply("gmail.test", None, client_ip=victim)
    resumed = wait_until(lambda: state_of(lab, victim, "gmail") is None, 150)
    assert resumed, f"not resumed: {state_of(lab, victim, 'gmail')}"
    third = [f"{tag}-d{i}@gmail.test" for i in range(30)]
    send(lab, f"{tag}-d", third)
    got_d = wait_for(f"{tag}-d", len(third), deadline_s=180)
    assert len(got_d) == len(third) and any(m.client_ip == victim for m in got_d), Counter(
        m.client_ip for m in got_d)
    # nothing lost, nothing bounced: the mail deferred on the suspended path is delivered (queue run forced)
    lab.ssh(HOST, "postqueue -f")
    got_a = wait_for(f"{tag}-a", len(first), deadline_s=300)
    assert len(got_a) == len(first), f"{len(got_a)}/{len(first)} of the first batch arrived"
    assert not bounced(lab, tag)
    events = json.loads(lab.ssh(HOST, "cat /var/lib/sendfleet/monitor/shaping.json").stdout)["events"]
    kinds = [e["event"] for e in events if e["ip"] == victim and e["class"] == "gmail"]
    assert "suspend" in kinds and "expire" in kinds, kinds


def test_s3150_suspends_the_outlook_path_only_until_the_operator_resumes(shaping: LabHandle) -> None:
    lab = shaping
    victim = pool_ips(lab)[1]
    tag = f"shp-s3150-{uuid.uuid4().hex[:8]}"
    control.sink_reply("outlook.test", f"550 5.7.1 Unfortunately, messages from [{victim}] weren't sent. Please "
                       "contact your Internet service provider since part of their network is on our block list "
                       "(S3150).", client_ip=victim)
    send(lab, tag, [f"{tag}-{i}@outlook.test" for i in range(30)])
    path = wait_until(lambda: (state_of(lab, victim, "outlook") or {}).get("state") == "suspended"
                      and state_of(lab, victim, "outlook"), 120)
    assert path, f"not suspended: {status(lab)}"
    config = json.loads(lab.ssh(HOST, f"cat {CONFIG}").stdout)
    assert "S3150" in path["reply"], path
    assert path["rule"] in {r["name"] for r in config["shaping"]["classes"]["outlook"]["rules"]}, path
    held = [p for p in status(lab) if p["state"] != "normal"]
    assert [(p["ip"], p["class"]) for p in held] == [(victim, "outlook")], held
    # the suspension survives a restart of the shaper
    lab.ssh(HOST, "systemctl restart sendfleet-shaper")
    assert wait_until(lambda: lab.ssh(HOST, "systemctl is-active sendfleet-shaper", check=False).stdout.strip()
                      == "active", 30)
    assert (state_of(lab, victim, "outlook") or {}).get("state") == "suspended"
    control.sink_reply("outlook.test", None, client_ip=victim)
    out = sendfleet("shaping", "resume", "-i", str(lab.inventory_dir), "--ip", victim, "--class", "outlook").stdout
    assert "resume" in out
    assert state_of(lab, victim, "outlook") is None


def test_a_blocklist_reply_drains_the_ip_and_the_monitor_restores_it(shaping: LabHandle) -> None:
    lab = shaping
    victim = pool_ips(lab)[2]
    tag = f"shp-bl-{uuid.uuid4().hex[:8]}"
    try:
        control.sink_reply("smallbiz.test", f"554 5.7.1 Service unavailable; Client host [{victim}] blocked using "
                           "zen.spamhaus.org", client_ip=victim)
        send(lab, tag, [f"{tag}-{i}@smallbiz.test" for i in range(30)])
        state = "/var/lib/sendfleet/monitor/state.json"

        def drained() -> bool:
            ips = json.loads(lab.ssh(HOST, f"cat {state}").stdout).get("ips") or {}
            return (ips.get(victim) or {}).get("status") == "drained"

        assert wait_until(drained, 120), "not drained after a reply quoting a blocklist"
        maps = lab.ssh(HOST, "postconf -h sender_dependent_default_transport_maps").stdout
        assert victim.replace(".", "_") not in maps, maps
        # the postfix role reads the drain back from the agent's local fact: nothing to change while drained
        proc = run_playbook(lab.inventory_dir, "site.yml", "--check", "--diff", "--limit", HOST)
        assert proc.returncode == 0 and recap(proc.stdout)[HOST]["changed"] == 0, proc.stdout[-6000:]
        control.sink_reply("smallbiz.test", None, client_ip=victim)
        restore_after = int(json.loads(lab.ssh(HOST, f"cat {CONFIG}").stdout)["restore_after"])
        for _ in range(restore_after):  # (the monitor's timer may add checks of its own: they count the same)
            lab.ssh(HOST, "systemctl start sendfleet-monitor.service")
        assert not drained(), f"still drained after {restore_after} clean checks"
        assert victim.replace(".", "_") in lab.ssh(HOST, "postconf -h sender_dependent_default_transport_maps").stdout
    finally:
        control.sink_reply("smallbiz.test", None, client_ip=victim)
        for _ in range(4):  # the restore rule, whatever the test reached
            lab.ssh(HOST, "systemctl start sendfleet-monitor.service", check=False)


def test_a_warming_ip_at_its_gmail_cap_spills_to_the_warm_ips(shaping: LabHandle) -> None:
    lab = shaping
    ips = pool_ips(lab)
    warming = ips[0]
    config = json.loads(lab.ssh(HOST, f"cat {CONFIG}").stdout)
    share = float(config["shaping"]["classes"]["gmail"]["warmup_share"])
    state = json.loads(lab.ssh(HOST, "cat /var/lib/sendfleet/monitor/shaping.json").stdout)
    sent_today = int((state.get("today") or {}).get(f"{warming} gmail", 0))
    room = 12  # what the cap leaves the warming IP today, after what earlier tests routed through it
    for m in config["members"]:
        if m["ip"] == warming:  # warming, with a day's volume whose Gmail share is today's count + room
            m["warmup"] = {"day": 0, "warm": False, "hourly": (sent_today + room + 0.5) / (24 * share)}
    lab.ssh(HOST, f"cp {CONFIG} {CONFIG}.testbak")
    tag = f"shp-cap-{uuid.uuid4().hex[:8]}"
    try:
        lab.ssh(HOST, f"printf %s {shlex.quote(json.dumps(config))} > {CONFIG}")
        time.sleep(3)  # the shaper takes a rewritten config within a second
        total = 150
        send(lab, tag, [f"{tag}-{i}@gmail.test" for i in range(total)])
        got = wait_for(tag, total, deadline_s=300)
        assert len(got) == total
        carried = Counter(m.client_ip for m in got)
        print(f"room {room} under the cap (already {sent_today} today): {dict(carried)}")
        assert carried[warming] == room, carried
        assert sum(carried[ip] for ip in ips if ip != warming) == total - carried[warming]
    finally:
        lab.ssh(HOST, f"mv {CONFIG}.testbak {CONFIG}", check=False)


def test_site_check_mode_is_unchanged_while_paths_are_held(shaping: LabHandle) -> None:
    lab = shaping
    ips = pool_ips(lab)
    inv = str(lab.inventory_dir)
    sendfleet("shaping", "suspend", "-i", inv, "--ip", ips[0], "--class", "gmail", "--for", "10m")
    lab.ssh(HOST, f"{PYTHON} -m sendfleet.monitor shaping throttle --config {CONFIG} --ip {ips[1]} --class yahoo "
                  "--seconds 600")
    transport = f"sf_{ips[1].replace('.', '_')}_yahoo_destination_concurrency_limit"
    assert wait_until(lambda: lab.ssh(HOST, f"postconf -h {transport}").stdout.strip() == "1", 30), (
        "the throttle's connections did not reach Postfix")
    fact = "/etc/ansible/facts.d/sendfleet_monitor.fact"  # written just after Postfix's reload
    assert wait_until(lambda: json.loads(lab.ssh(HOST, f"cat {fact}").stdout).get("throttled"), 30), (
        "the agent's local fact does not carry the throttle")
    proc = run_playbook(lab.inventory_dir, "site.yml", "--check", "--diff", "--limit", HOST)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert recap(proc.stdout)[HOST]["changed"] == 0, proc.stdout[-6000:]
    # and a real run changes nothing either
    proc = run_playbook(lab.inventory_dir, "site.yml", "--limit", HOST)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert recap(proc.stdout)[HOST]["changed"] == 0, proc.stdout[-6000:]
    held = {(p["ip"], p["class"]): p["state"] for p in status(lab)}
    assert held == {(ips[0], "gmail"): "suspended", (ips[1], "yahoo"): "throttled"}, held
