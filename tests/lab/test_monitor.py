"""The dnsbl_monitor role on the lab, on mta1 only, everything restored in `finally`:

- listing an in-service IP in the lab's rbldnsd drains it after one check (state, metrics, Postfix's randmap,
  the journal with evidence); mail of its pool still reaches the sink through the pool's other IPs; unlisted,
  it returns after N consecutive clean checks;
- the lab resolver unreachable from mta1 drains nothing and restores nothing;
- a warming IP (day 1) with two warm IPs carries about its scheduled share of 1,000 messages, not more;
- the delivery metrics per IP match what the sink received and what it deferred on purpose (421 for yahoo.test).

The timers of mta1 are stopped during each test (so that only the test's own checks count) and started again.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest

from sendfleet.core import maillog, warmup
from sendfleet.core.metrics import parse, samples_of
from sendfleet.core.poolmap import randmap_members
from tests.lab.conftest import LabHandle, sendfleet
from tests.lab.helpers import host_address, inventory_model, resume_shaping, submit, wait_for

pytestmark = pytest.mark.lab

HOST = "mta1"
POOL = "transactional"
DOMAIN = "shop.test"  # a sender domain of the transactional pool
CONFIG = "/etc/sendfleet/monitor/config.json"
STATE = "/var/lib/sendfleet/monitor/state.json"
PROM_DIR = "/var/lib/prometheus/node-exporter"
PYTHON = "/opt/sendfleet/venv/bin/python"
LAB_RESOLVER = "198.51.100.4"
ZONE = "zen.lab.test"


# --- helpers -------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
APP_ADDRESS = "198.51.100.32"  # an app address (allowed to submit), on the machine's bridge
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.M)


def make_message(sender: str, recipient: str, tag: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"sendfleet monitor test {tag}"
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain=sender.split("@", 1)[1])
    msg["X-Sendfleet-Tag"] = tag
    msg.set_content(f"test message {tag}\n")
    return msg


def run_playbook(inventory: Path, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{Path(sys.executable).parent}:" + os.environ.get("PATH", "")}
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), playbook,
                           *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


def recap(output: str) -> dict[str, dict[str, int]]:
    tail = output[output.rindex("PLAY RECAP"):] if "PLAY RECAP" in output else ""
    return {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")} for m in RECAP.finditer(tail)}



def pool_ips(lab: LabHandle) -> list[str]:
    _, sending = inventory_model(lab.inventory_dir)
    return [e["ip"] for e in sending[HOST] if e["pool"] == POOL]


def transport(ip: str) -> str:
    return "sf_" + ip.replace(".", "_")


def check(lab: LabHandle) -> dict[str, Any]:
    """One monitor run (what the timer does), then its state file."""
    lab.ssh(HOST, "systemctl start sendfleet-monitor.service")
    return json.loads(lab.ssh(HOST, f"cat {STATE}").stdout)


def prom(lab: LabHandle, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return parse(lab.ssh(HOST, f"cat {PROM_DIR}/{name}").stdout)


def metric(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    for got, value in samples_of(parsed, name):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return None


def pool_members(lab: LabHandle) -> list[str]:
    """The members of mta1's transactional randmap, as Postfix has them now."""
    value = lab.ssh(HOST, "postconf -h sender_dependent_default_transport_maps").stdout
    ours = {transport(ip) for ip in pool_ips(lab)}
    for members in randmap_members(value):
        if ours & set(members):
            return members
    raise AssertionError(f"no randmap of pool {POOL} in {value!r}")


def restore_after(lab: LabHandle) -> int:
    return int(json.loads(lab.ssh(HOST, f"cat {CONFIG}").stdout)["restore_after"])


@pytest.fixture
def monitor(converged: LabHandle) -> Iterator[LabHandle]:
    """mta1 with its monitor timers stopped for the test (started again afterwards)."""
    lab = converged
    lab.ssh(HOST, "systemctl stop sendfleet-monitor.timer sendfleet-delivery.timer")
    try:
        yield lab
    finally:
        lab.ssh(HOST, "systemctl start sendfleet-monitor.timer sendfleet-delivery.timer", check=False)


def restore_all(lab: LabHandle, listed: list[str]) -> None:
    """Unlist, then run clean checks until no IP of mta1 is drained (at most restore_after + 2 runs)."""
    from sendfleet.lab.control import unlist_entry

    for ip in listed:
        unlist_entry(ZONE, ip)
    for ip in listed:
        wait_dns(ip, listed=False)
    for _ in range(restore_after(lab) + 2):
        state = check(lab)
        if not any(s["status"] == "drained" for s in state["ips"].values()):
            return
    raise AssertionError(f"{HOST}: IPs still drained after cleanup: {state['ips']}")


def wait_dns(ip: str, listed: bool, deadline_s: float = 60) -> None:
    """Until the lab resolver (what mta1 asks) answers for `ip` in ZONE as listed / not listed."""
    import dns.exception
    import dns.resolver

    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [LAB_RESOLVER]
    res.lifetime = 3
    name = ".".join(reversed(ip.split("."))) + "." + ZONE
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            res.resolve(name, "A")
            now_listed = True
        except dns.resolver.NXDOMAIN:
            now_listed = False
        except dns.exception.DNSException:
            now_listed = not listed
        if now_listed == listed:
            return
        time.sleep(1)
    raise AssertionError(f"{name} still {'not ' if listed else ''}listed at {LAB_RESOLVER} after {deadline_s} s")


def send(lab: LabHandle, tag: str, recipients: list[str]) -> None:
    msgs = [make_message(f"app@{DOMAIN}", rcpt, f"{tag}-{i}") for i, rcpt in enumerate(recipients)]
    server = host_address(lab.inventory_dir, HOST)
    for start in range(0, len(msgs), 200):
        submit(server, msgs[start : start + 200])


# --- drain and restore ---------------------------------------------------------------------------


def test_listed_ip_is_drained_mail_flows_and_it_returns_after_n_clean_checks(monitor: LabHandle) -> None:
    from sendfleet.lab.control import list_entry, unlist_entry

    lab = monitor
    ips = pool_ips(lab)
    assert len(ips) >= 2, f"{HOST} needs 2+ IPs in {POOL}: {ips}"
    victim, others = ips[0], ips[1:]
    n = restore_after(lab)
    state = check(lab)
    assert state["ips"][victim]["status"] == "in_service", state["ips"]
    t0 = int(time.time())
    try:
        list_entry(ZONE, victim, "127.0.0.2", "lab test: monitor drain")
        wait_dns(victim, listed=True)
        state = check(lab)
        entry = state["ips"][victim]
        assert entry["status"] == "drained", entry
        assert any(e["zone"] == ZONE and e["outcome"] == "listed" and "127.0.0.2" in e["codes"]
                   for e in entry["evidence"]), entry
        assert [e for e in state["events"] if e["action"] == "drain" and e["ip"] == victim]
        for other in others:
            assert state["ips"][other]["status"] == "in_service"
        metrics = prom(lab, "sendfleet_monitor.prom")
        assert metric(metrics, "sendfleet_ip_drained", ip=victim, pool=POOL) == 1
        assert metric(metrics, "sendfleet_ip_listed", ip=victim, zone=ZONE) == 1
        assert metric(metrics, "sendfleet_ip_drained", ip=others[0], pool=POOL) == 0
        members = pool_members(lab)
        assert transport(victim) not in members and set(members) == {transport(o) for o in others}
        journal = lab.ssh(HOST, f"journalctl -t sendfleet-monitor --since @{t0} -o cat --no-pager").stdout
        assert f"drain {victim} (pool {POOL}): listed [{ZONE} listed 127.0.0.2" in journal, journal

        # mail of the pool goes on, through the other IPs only
        tag = f"mon-drain-{uuid.uuid4().hex[:8]}"
        send(lab, tag, [f"user{i}@gmail.test" for i in range(30)])
        got = wait_for(tag, 30, deadline_s=240)
        assert len(got) == 30, f"only {len(got)}/30 messages of the drained pool reached the sink"
        used = Counter(m.client_ip for m in got)
        assert victim not in used and set(used) <= set(others), used

        # unlisted: back after exactly N consecutive clean checks
        unlist_entry(ZONE, victim)
        wait_dns(victim, listed=False)
        for i in range(1, n):
            state = check(lab)
            assert state["ips"][victim]["status"] == "drained", (i, state["ips"][victim])
            assert state["ips"][victim]["clean_streak"] == i
        state = check(lab)
        assert state["ips"][victim]["status"] == "in_service", state["ips"][victim]
        assert [e for e in state["events"] if e["action"] == "restore" and e["ip"] == victim]
        assert transport(victim) in pool_members(lab)
        assert metric(prom(lab, "sendfleet_monitor.prom"), "sendfleet_ip_drained", ip=victim, pool=POOL) == 0
    finally:
        restore_all(lab, [victim])


def test_unreachable_resolver_drains_nothing_and_restores_nothing(monitor: LabHandle) -> None:
    from sendfleet.lab.control import list_entry, unlist_entry

    lab = monitor
    ips = pool_ips(lab)
    drained, listed_later = ips[0], ips[1]
    n = restore_after(lab)
    # the rule goes into mta1's network namespace from the machine (the container may not change nftables)
    netns = ["ip", "netns", "exec", f"sfl-{HOST}", "nft"]
    block = [
        ["add", "table", "inet", "sfmontest"],
        ["add", "chain", "inet", "sfmontest", "out", "{ type filter hook output priority 0 ; }"],
        ["add", "rule", "inet", "sfmontest", "out", "ip", "daddr", LAB_RESOLVER, "udp", "dport", "53", "drop"],
        ["add", "rule", "inet", "sfmontest", "out", "ip", "daddr", LAB_RESOLVER, "tcp", "dport", "53", "drop"],
    ]
    try:
        # one IP drained beforehand, then unlisted: only clean checks may bring it back
        list_entry(ZONE, drained, "127.0.0.2", "lab test: monitor resolver down")
        wait_dns(drained, listed=True)
        assert check(lab)["ips"][drained]["status"] == "drained"
        unlist_entry(ZONE, drained)
        list_entry(ZONE, listed_later, "127.0.0.2", "lab test: listed while the resolver is down")
        wait_dns(drained, listed=False)
        wait_dns(listed_later, listed=True)
        query = ("import dns.resolver as r; x = r.Resolver(configure=False); "
                 f"x.nameservers = ['{LAB_RESOLVER}']; x.lifetime = 3; x.resolve('lab.test', 'SOA')")
        assert lab.ssh(HOST, f"python3 -c {shlex.quote(query)}", check=False).returncode == 0
        for rule in block:
            subprocess.run([*netns, *rule], check=True, capture_output=True, text=True)
        probe = lab.ssh(HOST, f"python3 -c {shlex.quote(query)}", check=False)
        assert probe.returncode != 0, "the resolver still answers mta1"
        for _ in range(n + 1):
            state = check(lab)
            assert state["ips"][drained]["status"] == "drained", state["ips"][drained]
            assert state["ips"][listed_later]["status"] == "in_service", state["ips"][listed_later]
            assert all(v["verdict"] == "unknown" for v in state["verdicts"].values()), state["verdicts"]
            assert state["check_ok"] is False
        assert all(z["status"] != "ok" for z in state["zones"]), state["zones"]
        metrics = prom(lab, "sendfleet_monitor.prom")
        assert metric(metrics, "sendfleet_monitor_check_ok") == 0
        assert metric(metrics, "sendfleet_zone_status", zone=ZONE, status="unreachable") == 1
        assert metric(metrics, "sendfleet_ip_drained", ip=listed_later, pool=POOL) == 0
        assert metric(metrics, "sendfleet_ip_listed", ip=listed_later, zone="*") == -1
        assert transport(listed_later) in pool_members(lab)
        assert transport(drained) not in pool_members(lab)
    finally:
        subprocess.run([*netns, "delete", "table", "inet", "sfmontest"], check=False, capture_output=True)
        unlist_entry(ZONE, listed_later)
        restore_all(lab, [drained])


# --- warm-up -------------------------------------------------------------------------------------


def apply_plan(
    lab: LabHandle, config: dict[str, Any], weights: dict[str, int], limits: dict[str, dict[str, int]]
) -> int:
    """Write mta1's monitor config with these weights/limits for the pool's IPs; `monitor apply`; its exit code."""
    for m in config["members"]:
        if m["ip"] in weights:
            m["weight"] = weights[m["ip"]]
            m["limits"] = limits.get(m["ip"], {})
    lab.ssh(HOST, f"printf %s {shlex.quote(json.dumps(config))} > {CONFIG}")
    return lab.ssh(HOST, f"{PYTHON} -m sendfleet.monitor apply --config {CONFIG}", check=False).returncode


def test_warming_ip_carries_its_scheduled_share(monitor: LabHandle) -> None:
    """Day 1 of the default schedule, one warming IP and two warm ones in mta1's transactional pool, as
    sendfleet.core.warmup plans it: weight 1 against 20 + 20 (2.4 %) and 1 message per 129 s per destination.

    (a) the weight alone: over 1,000 messages the warming IP carries its share (binomial, 4 sigma);
    (b) the whole plan: the rate delay holds it to its hourly schedule per provider; Postfix sends the
        overflow through the warm IPs instead (it carries less than its weight share, never more)."""
    lab = monitor
    ips = pool_ips(lab)
    assert len(ips) == 3, f"the test wants a pool of 3 IPs on {HOST}: {ips}"
    warming = ips[0]
    today = date.today()
    plans = warmup.plan_pool_members(
        [(ip, POOL, HOST, today - timedelta(days=1) if ip == warming else None) for ip in ips],
        today,
        warmup.WarmupSettings(),
    )
    plan = {p.ip: p for p in plans}
    assert plan[warming].stage.day == 1 and plan[warming].weight == 1
    weights = {ip: plan[ip].weight for ip in ips}
    limits = {ip: plan[ip].stage.limits.as_dict() for ip in ips}
    delay = plan[warming].stage.limits.rate_delay
    assert delay == 129 and limits[warming]["concurrency_limit"] == 1
    share = plan[warming].share
    config = json.loads(lab.ssh(HOST, f"cat {CONFIG}").stdout)
    domains = ("gmail.test", "yahoo.test", "outlook.test")
    tags = []
    lab.ssh(HOST, f"cp {CONFIG} {CONFIG}.testbak")
    try:
        # (a) weights only
        assert apply_plan(lab, config, weights, {}) == 1
        members = Counter(pool_members(lab))
        assert {ip: members[transport(ip)] for ip in ips} == weights
        total = 1000
        tag = f"mon-warm-{uuid.uuid4().hex[:8]}"
        tags.append((tag, total))
        send(lab, tag, [f"{tag}-{i}@{domains[i % 3]}" for i in range(total)])
        got = wait_for(tag, total, deadline_s=300)
        assert len(got) == total
        carried = sum(1 for m in got if m.client_ip == warming)
        expected = total * share
        sigma = math.sqrt(total * share * (1 - share))
        print(f"weights only: warming IP {warming} carried {carried}/{total}, scheduled {expected:.1f} +- {sigma:.1f}")
        assert expected - 4 * sigma <= carried <= expected + 4 * sigma, (carried, expected, sigma)

        # (b) weights and limits
        assert apply_plan(lab, config, weights, limits) == 1
        assert lab.ssh(HOST, f"postconf -h {transport(warming)}_destination_rate_delay").stdout.strip() == f"{delay}s"
        assert lab.ssh(HOST, f"postconf -h {transport(warming)}_destination_concurrency_limit").stdout.strip() == "1"
        total = 300
        tag = f"mon-warmrate-{uuid.uuid4().hex[:8]}"
        tags.append((tag, total))
        started = time.monotonic()
        send(lab, tag, [f"{tag}-{i}@{domains[i % 3]}" for i in range(total)])
        got = wait_for(tag, int(total * (1 - share) - 4 * math.sqrt(total * share)), deadline_s=300)
        time.sleep(10)
        got = wait_for(tag, total, deadline_s=1)
        elapsed = time.monotonic() - started
        per_domain = Counter(m.rcpt_to[0].split("@")[1] for m in got if m.client_ip == warming)
        carried = sum(per_domain.values())
        print(f"with limits: warming IP delivered {carried} in {elapsed:.0f} s ({dict(per_domain)}), "
              f"{len(got)}/{total} at the sink")
        assert carried <= total * share + 4 * math.sqrt(total * share), carried
        for dom, count in per_domain.items():
            assert count <= 1 + elapsed / delay, (dom, count, elapsed)
    finally:
        lab.ssh(HOST, f"mv {CONFIG}.testbak {CONFIG} && {PYTHON} -m sendfleet.monitor apply --config {CONFIG}; "
                      "postqueue -f", check=False)
        for tag, total in tags:  # leave nothing queued behind
            wait_for(tag, total, deadline_s=300)
    assert lab.ssh(HOST, f"{PYTHON} -m sendfleet.monitor apply --config {CONFIG}", check=False).returncode == 0
    assert lab.ssh(HOST, f"postconf -h {transport(warming)}_destination_rate_delay").stdout.strip() == "0s"
    assert Counter(pool_members(lab)) == Counter(transport(ip) for ip in ips)


# --- delivery metrics ----------------------------------------------------------------------------


def delivery_totals(lab: LabHandle) -> tuple[Counter[tuple[str, str, str]], float]:
    """Run the log scan now; its counters per (ip, provider, status) and the time it read the log up to."""
    lab.ssh(HOST, "systemctl start sendfleet-delivery.service")
    out: Counter[tuple[str, str, str]] = Counter()
    for labels, value in samples_of(prom(lab, "sendfleet_delivery.prom"), "sendfleet_delivery_total"):
        out[(labels["ip"], labels["provider"], labels["status"])] += int(value)
    ran = json.loads(lab.ssh(HOST, "cat /var/lib/sendfleet/monitor/delivery.json").stdout)["last_run_ts"]
    return out, float(ran)


def sink_between(ips: list[str], start: float, end: float) -> Counter[str]:
    """Messages the sink received from these IPs in (start, end]: every message, not only this test's
    (other traffic through mta1 is counted on both sides)."""
    from sendfleet.lab.sink import read_messages

    return Counter(m.client_ip for m in read_messages()
                   if m.client_ip in ips and start < float(m.received_at) <= end)


def sink_rejects(lab: LabHandle, tag: str) -> Counter[str]:
    """421s the sink gave per client IP for this test's recipients (its own log, maillog_file
    /var/log/postfix.log): what the lab deferred on purpose."""
    log = lab.ssh("sink", f"grep -F -- {shlex.quote(tag)} /var/log/postfix.log || true").stdout
    out: Counter[str] = Counter()
    for line in log.splitlines():
        if "reject: RCPT from" in line and ": 421 " in line and "@yahoo.test>" in line:
            out[line.split("reject: RCPT from", 1)[1].split("[", 1)[1].split("]", 1)[0]] += 1
    return out


def test_delivery_metrics_match_the_sink(monitor: LabHandle, tmp_path: Path) -> None:
    from sendfleet.lab.control import sink_recipient_action

    lab = monitor
    ips = pool_ips(lab)
    before, t_before = delivery_totals(lab)
    tag = f"mon-dlv-{uuid.uuid4().hex[:8]}"
    n_ok, n_deferred = 40, 12
    try:
        sink_recipient_action("yahoo.test", "421 4.7.0 rate limited")
        send(lab, tag, [f"{tag}-d{i}@gmail.test" for i in range(n_ok)]
             + [f"{tag}-y{i}@yahoo.test" for i in range(n_deferred)])
        got = wait_for(tag, n_ok, deadline_s=240)
        assert len(got) == n_ok
        # wait until every yahoo message was tried once (and deferred)
        deferred: Counter[str] = Counter()
        for _ in range(60):
            rejects = sink_rejects(lab, tag)
            if sum(rejects.values()) >= n_deferred:
                break
            time.sleep(3)
        after, t_after = delivery_totals(lab)
        delta = after - before
        sent_at_sink = sink_between(ips, t_before, t_after)
        assert sum(sent_at_sink.values()) >= n_ok
        for ip in ips:
            sent = sum(v for (i, _, st), v in delta.items() if i == ip and st == "sent")
            assert sent == sent_at_sink[ip], (ip, sent, sent_at_sink, dict(delta))
            deferred[ip] = sum(v for (i, _, st), v in delta.items() if i == ip and st == "deferred")
        rejects = sink_rejects(lab, tag)
        assert sum(rejects.values()) >= 1
        assert {ip: deferred[ip] for ip in ips} == {ip: rejects[ip] for ip in ips}, (deferred, rejects)
        assert all(prov == "yahoo" for (_, prov, st) in delta if st == "deferred")  # yahoo.test's class
        reasons = samples_of(prom(lab, "sendfleet_delivery.prom"), "sendfleet_delivery_reason_total")
        assert any(lbl["reason"].startswith("421 4.7.0") and lbl["status"] == "deferred" for lbl, _ in reasons), reasons
        state = json.loads(lab.ssh(HOST, "cat /var/lib/sendfleet/monitor/delivery.json").stdout)
        hour = maillog.hour_key(time.time())
        assert any(r["status"] == "sent" for r in state["hours"].get(hour, [])), state["hours"].keys()
        # `sendfleet report` reads the same counts from every sender, and draws the chart
        png = tmp_path / "report.png"
        out = sendfleet("report", "-i", str(lab.inventory_dir), "--hours", "2", "--format", "json", "--png", str(png),
                        check=False)
        assert out.returncode in (0, 1), out.stderr  # 1: another sender could not be read (shared lab)
        report = json.loads(out.stdout)
        mine = [r for r in report["rows"] if r["host"] == HOST and r["ip"] in ips]
        assert sum(r["deferred"] for r in mine if r["provider"] == "yahoo") >= sum(rejects.values())
        assert sum(r["sent"] for r in mine) >= n_ok
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        sink_recipient_action("yahoo.test", None)
        # the 421s made the shaper throttle mta1's yahoo paths (the shipped rate-limit rule): end that too
        resume_shaping(lambda command: lab.ssh(HOST, command))
        lab.ssh(HOST, "postqueue -f", check=False)
    # the deferred mail goes out once the sink accepts again
    assert len(wait_for(tag, n_ok + n_deferred, deadline_s=300)) == n_ok + n_deferred


def test_rerunning_the_playbook_advances_the_warmup(monitor: LabHandle) -> None:
    """monitor.yml computes each IP's stage for its day (sendfleet.core.warmup through the sf_warmup_plan
    filter) and Postfix follows: the same IP on day 1, day 18 and day 42 (warm) of its warm-up."""
    lab = monitor
    _, sending = inventory_model(lab.inventory_dir)
    entries = [dict(e) for e in sending[HOST]]
    ips = pool_ips(lab)
    start = date(2026, 1, 1)
    entries[0]["warmup_start"] = start.isoformat()
    assert entries[0]["ip"] == ips[0]
    try:
        for day in (1, 18, 42):
            today = start + timedelta(days=day)
            extra = json.dumps({"dnsbl_monitor_sending_ips": entries, "dnsbl_monitor_warmup_today": today.isoformat()})
            proc = run_playbook(lab.inventory_dir, "playbooks/monitor.yml", "--limit", HOST, "-e", extra)
            assert proc.returncode == 0, proc.stdout[-3000:]
            plans = warmup.plan_pool_members(
                [(ip, POOL, HOST, start if ip == ips[0] else None) for ip in ips], today, warmup.WarmupSettings()
            )
            want = {transport(p.ip): p.weight for p in plans}
            assert Counter(pool_members(lab)) == Counter(want), (day, pool_members(lab), want)
            delay = lab.ssh(HOST, f"postconf -h {transport(ips[0])}_destination_rate_delay").stdout.strip()
            rate = plans[0].stage.limits.rate_delay
            assert delay == (f"{rate}s" if rate is not None else "0s"), (day, delay)
            assert recap(proc.stdout)[HOST]["failed"] == 0
        assert Counter(pool_members(lab)) == Counter(transport(ip) for ip in ips)  # warm: back to 1 each
    finally:
        proc = run_playbook(lab.inventory_dir, "playbooks/monitor.yml", "--limit", HOST)
        assert proc.returncode == 0, proc.stdout[-3000:]


def test_warmup_plan_from_the_hosts_matches_what_postfix_applies(monitor: LabHandle) -> None:
    """`sendfleet warmup plan --from-hosts` reads every sender's monitor fact by SSH and plans the weights that
    mta1's Postfix has in its transactional randmap right now."""
    lab = monitor
    proc = sendfleet("warmup", "plan", "-i", str(lab.inventory_dir), "--from-hosts", "--days", "0",
                     "--format", "json", check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cannot reach" not in proc.stderr and "no monitor fact" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout)
    _, sending = inventory_model(lab.inventory_dir)
    assert data["hosts_read"] == sorted(sending), data["hosts_read"]
    planned = {i["ip"]: i["today"]["weight"] for i in data["ips"] if i["host"] == HOST and i["pool"] == POOL}
    members = Counter(pool_members(lab))
    assert {ip: members[transport(ip)] for ip in planned} == planned
