"""`ansible-playbook site.yml` on the lab: idempotent, pools by sender domain,
HELO = PTR, TLS, DKIM, no relay, bad variables refused before any change.

Every test starts from the `converged` fixture (the main job: vet --admit, pool assign, site.yml).
"""

from __future__ import annotations

import json
import re
import smtplib
import time
import uuid
from collections import Counter
from typing import Any

import dkim
import dns.resolver
import dns.reversename
import pytest

from tests.lab.helpers import (
    changed_tasks,
    host_address,
    inventory_model,
    make_message,
    recap,
    resolver,
    run_playbook,
    submit,
    txt_lookup,
    wait_for,
)

pytestmark = pytest.mark.lab

OUTSIDER_ADDRESS = "198.51.100.40"
RECIPIENT_DOMAINS = ("gmail.test", "yahoo.test", "outlook.test")
# Files the roles own on every sender: none of them may change when a run is refused.
ROLE_FILES = (
    "/etc/nftables.conf", "/etc/ssh/sshd_config.d/50-sendfleet.conf", "/etc/sendfleet/sending-ips.conf",
    "/etc/opendkim.conf", "/etc/opendkim/KeyTable", "/etc/opendkim/SigningTable",
    "/etc/opendkim/TrustedHosts", "/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/postfix/sender_domains",
)


def file_digests(lab: Any, host: str) -> dict[str, str]:
    out = lab.ssh(host, "sha256sum " + " ".join(ROLE_FILES) + " 2>/dev/null; true").stdout
    return {line.split()[1]: line.split()[0] for line in out.splitlines() if line.strip()}


# --- idempotence ---------------------------------------------------------------------------------


def test_second_run_changes_nothing(converged: Any) -> None:
    proc = run_playbook(converged.inventory_dir, "site.yml")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    result = recap(proc.stdout)
    assert result, f"no PLAY RECAP in the output:\n{proc.stdout[-3000:]}"
    changed = {h: r for h, r in result.items() if r["changed"] or r["failed"] or r["unreachable"]}
    assert not changed, f"second run of site.yml is not idempotent: {changed}; changed: {changed_tasks(proc.stdout)}"


def test_check_diff_on_converged_fleet_changes_nothing(converged: Any) -> None:
    proc = run_playbook(converged.inventory_dir, "site.yml", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    result = recap(proc.stdout)
    assert result, f"no PLAY RECAP in the output:\n{proc.stdout[-3000:]}"
    changed = {h: r for h, r in result.items() if r["changed"] or r["failed"] or r["unreachable"]}
    assert not changed, (f"--check --diff reports changes on a converged fleet: {changed}; changed: "
                         f"{changed_tasks(proc.stdout)}\n{proc.stdout[-5000:]}")


# --- mail through the pools ----------------------------------------------------------------------


def test_each_sender_domain_leaves_from_its_pool_with_helo_ptr_tls_and_dkim(converged: Any) -> None:
    inv = converged.inventory_dir
    domains, sending = inventory_model(inv)
    res = resolver(converged.resolver)
    run = uuid.uuid4().hex[:10]
    expected: dict[str, tuple[str, str, dict[str, str]]] = {}  # tag -> (host, domain, ip->ptr of the pool)
    for host, ips in sorted(sending.items()):
        msgs = []
        for domain, conf in sorted(domains.items()):
            pool_ips = {e["ip"]: e["ptr"] for e in ips if e["pool"] == conf["pool"]}
            if not pool_ips:
                continue
            tag = f"dom-{run}-{host}-{domain}"
            expected[tag] = (host, domain, pool_ips)
            msgs.append(make_message(f"probe-{run}@{domain}", f"inbox@{RECIPIENT_DOMAINS[0]}", tag))
        if msgs:
            submit(host_address(inv, host), msgs)
    served = {d for _, d, _ in expected.values()}
    assert served == set(domains), f"no sender serves some domain's pool: {sending}"

    got = {m.header("X-Sendfleet-Tag"): m for m in wait_for(f"dom-{run}-", len(expected))}
    missing = sorted(set(expected) - set(got))
    assert not missing, f"never reached the sink: {missing}"

    txt = txt_lookup(res)
    for tag, (host, domain, pool_ips) in expected.items():
        m = got[tag]
        assert m.client_ip in pool_ips, f"{tag}: from {m.client_ip}, not a pool IP of {host}: {sorted(pool_ips)}"
        assert m.helo == pool_ips[m.client_ip], f"{tag}: HELO {m.helo!r} != PTR {pool_ips[m.client_ip]!r}"
        ptr = [r.to_text().rstrip(".") for r in res.resolve(dns.reversename.from_address(m.client_ip), "PTR")]
        assert ptr == [m.helo], f"{tag}: lab DNS PTR of {m.client_ip} is {ptr}, HELO was {m.helo!r}"
        assert m.tls_protocol, f"{tag}: delivered without TLS"
        assert dkim.verify(m.raw, dnsfunc=txt), f"{tag}: DKIM signature does not verify against lab DNS"
        sig = m.header("DKIM-Signature") or ""
        assert re.search(rf"\bd={re.escape(domain)};", sig), f"{tag}: DKIM d= is not {domain}: {sig}"


def test_three_ip_pool_uses_every_ip(converged: Any) -> None:
    inv = converged.inventory_dir
    domains, sending = inventory_model(inv)
    candidates = [(host, domain, [e["ip"] for e in ips if e["pool"] == conf["pool"]])
                  for host, ips in sorted(sending.items()) for domain, conf in sorted(domains.items())]
    host, domain, pool_ips = next((c for c in candidates if len(c[2]) >= 3), (None, None, []))
    assert host, f"no sender has 3 IPs in one pool: {sending}"
    run = uuid.uuid4().hex[:10]
    msgs = [make_message(f"bulk-{run}@{domain}", f"user{i}@{RECIPIENT_DOMAINS[i % 3]}", f"bulk-{run}-{i:03d}")
            for i in range(300)]
    for start in range(0, 300, 100):
        submit(host_address(inv, host), msgs[start:start + 100])
    got = wait_for(f"bulk-{run}-", 300, deadline_s=600)
    assert len(got) == 300, f"only {len(got)} of 300 messages reached the sink"
    counts = Counter(m.client_ip for m in got)
    assert set(counts) == set(pool_ips), f"{host}/{domain}: IPs used {dict(counts)}, pool {pool_ips}"
    # randmap with equal weights: each IP expects 300/n; a share under a third of that is not "random".
    floor = 300 / len(pool_ips) / 3
    assert min(counts.values()) >= floor, f"uneven spread over the pool: {dict(counts)}"


# --- no open relay -------------------------------------------------------------------------------


def test_relay_from_outside_the_app_networks_is_refused(converged: Any) -> None:
    inv = converged.inventory_dir
    domains, sending = inventory_model(inv)
    host = sorted(sending)[0]
    domain = sorted(domains)[0]
    run = uuid.uuid4().hex[:10]
    msg = make_message(f"relay-{run}@{domain}", f"victim@{RECIPIENT_DOMAINS[0]}", f"relay-{run}-outsider")

    # From the outsider address: the firewall drops it, or Postfix refuses the recipient.
    refused = False
    server = host_address(inv, host)
    try:
        with smtplib.SMTP(server, 25, source_address=(OUTSIDER_ADDRESS, 0), timeout=10) as smtp:
            smtp.ehlo("outsider.example")
            smtp.send_message(msg)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPResponseException):
        refused = True  # Postfix said no
    except OSError:
        refused = True  # the firewall dropped or refused the connection
    assert refused, f"{host} accepted mail for relay from {OUTSIDER_ADDRESS}"

    # Past the firewall (from the host's own address, which is neither loopback nor an app network):
    # Postfix itself must refuse to relay.
    probe = (
        "import smtplib,sys\n"
        f"s=smtplib.SMTP('{server}',25,source_address=('{server}',0),timeout=20)\n"
        "s.ehlo('outsider.example')\n"
        f"code,_=s.mail('relay-{run}@{domain}')\n"
        f"code,text=s.rcpt('victim@{RECIPIENT_DOMAINS[0]}')\n"
        "print(code, text.decode())\n"
    )
    out = converged.ssh(host, f"python3 -c \"{probe}\"").stdout.strip()
    assert out.split()[0].startswith("5"), f"{host}: RCPT from a non-app address was not refused: {out}"
    # Nothing with this run's tag may ever reach the sink (give the queue time to act if it had accepted).
    time.sleep(20)
    assert wait_for(f"relay-{run}-", 1, deadline_s=5) == [], "a relayed message reached the sink"


# --- wrong variables -----------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "extra", "named"), [
    ("unknown pool",
     lambda ip: {"sending_ips": [{"ip": ip, "pool": "nosuchpool", "ptr": "o1.mta1.lab.test"}]},
     "sending_ips[0].pool: unknown pool 'nosuchpool'"),
    ("bad address", lambda ip: {"sending_ips": [{"ip": "198.51.100.300", "pool": "transactional",
                                                 "ptr": "o1.mta1.lab.test"}]},
     "sending_ips[0].ip: '198.51.100.300' is not an IP address"),
    ("wrong type", lambda ip: {"sending_ips": "198.51.100.64"}, "option 'sending_ips'"),
    ("invalid selector", lambda ip: {"sender_domains": {"shop.test": {"pool": "transactional",
                                                                     "selectors": ["Bad_Selector!"]}}},
     "sender_domains.shop.test.selectors[0]: 'bad_selector!' is not a valid DKIM selector"),
])
def test_wrong_variable_fails_before_any_change(converged: Any, case: str, extra: Any, named: str) -> None:
    inv = converged.inventory_dir
    _, sending = inventory_model(inv)
    hosts = sorted(sending)
    some_ip = next(e["ip"] for h in hosts for e in sending[h])
    before = {h: file_digests(converged, h) for h in hosts}
    # site.yml: the validation play comes first, so neither DNS nor any host may change.
    proc = run_playbook(inv, "site.yml", "-e", json.dumps(extra(some_ip)))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{case}: the run succeeded:\n{out[-3000:]}"
    assert named in out, f"{case}: the failure does not name the variable ({named!r}):\n{out[-4000:]}"
    result = recap(proc.stdout)
    assert all(r["changed"] == 0 for r in result.values()), f"{case}: something changed: {result}"
    after = {h: file_digests(converged, h) for h in hosts}
    moved = sorted(f"{h}:{f}" for h in hosts for f in set(before[h]) | set(after[h])
                   if before[h].get(f) != after[h].get(f))
    assert not moved, f"{case}: role files changed on a refused run: {moved}"
    assert all(before[h] for h in hosts), "no role files found on the senders (not converged?)"


def test_sending_ip_config_is_persistent(converged: Any) -> None:
    """The addresses come back from the unit alone (as at boot), without Ansible."""
    _, sending = inventory_model(converged.inventory_dir)
    host = sorted(sending)[0]
    ip = sending[host][0]["ip"]
    converged.ssh(host, "systemctl stop sendfleet-sending-ips.service")
    try:
        gone = converged.ssh(host, "ip -o addr show dev eth0").stdout
        assert f" {ip}/" not in gone, f"{host}: {ip} still present after stopping the unit"
    finally:
        converged.ssh(host, "systemctl start sendfleet-sending-ips.service")
    back = converged.ssh(host, "ip -o addr show dev eth0").stdout
    assert f" {ip}/" in back, f"{host}: {ip} not restored by sendfleet-sending-ips.service"
    enabled = converged.ssh(host, "systemctl is-enabled sendfleet-sending-ips.service").stdout.strip()
    assert enabled == "enabled", f"{host}: sendfleet-sending-ips.service is {enabled}"
