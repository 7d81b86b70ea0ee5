"""The lab is real and answers like the internet would."""

from __future__ import annotations

import ipaddress
import json
import smtplib
import subprocess
import time
import uuid

import dns.message
import dns.query
import dns.rcode
import pytest

from sendfleet.errors import UsageError
from sendfleet.lab import network
from sendfleet.lab.config import LabConfig
from sendfleet.lab.sink import read_messages

from .conftest import REPO, LabHandle, sendfleet


def resolve(lab: LabHandle, name: str, rdtype: str) -> list[str]:
    answer = dns.query.udp(dns.message.make_query(name, rdtype), lab.resolver, timeout=3)
    assert answer.rcode() == dns.rcode.NOERROR, f"{name} {rdtype}: {dns.rcode.to_text(answer.rcode())}"
    return [rr.to_text() for rrset in answer.answer for rr in rrset]


def test_every_host_answers_ansible_ping(lab: LabHandle) -> None:
    proc = subprocess.run([str(REPO / ".venv/bin/ansible"), "-i", str(lab.inventory_dir), "all", "-m",
                           "ansible.builtin.ping"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in lab.config.hosts:  # type: ignore[attr-defined]
        assert f"{host.name} | SUCCESS" in proc.stdout


def test_resolver_has_ptr_and_forward_for_every_lab_address(lab: LabHandle) -> None:
    cfg = lab.config
    addresses = [h.ipv4 for h in cfg.hosts] + [h.ipv6 for h in cfg.hosts]  # type: ignore[attr-defined]
    addresses += [a for a, _ in cfg.bridge_addresses()]  # type: ignore[attr-defined]
    for addr in addresses:
        ptrs = resolve(lab, ipaddress.ip_address(addr).reverse_pointer, "PTR")
        assert len(ptrs) == 1, f"{addr}: PTR {ptrs}"
        rdtype = "A" if ipaddress.ip_address(addr).version == 4 else "AAAA"
        assert addr in resolve(lab, ptrs[0], rdtype), f"{addr}: {ptrs[0]} does not resolve back"


def test_resolver_answers_lab_zones_only(lab: LabHandle) -> None:
    answer = dns.query.udp(dns.message.make_query("example.com", "A"), lab.resolver, timeout=3)
    assert answer.rcode() == dns.rcode.REFUSED
    assert resolve(lab, "gmail.test", "MX") == ["10 mx1.l.gmail.test."]


def test_recipient_domains_have_provider_like_mx_hosts_on_the_sink(lab: LabHandle) -> None:
    from sendfleet.lab.config import RECIPIENT_DOMAINS, RECIPIENT_MX

    sink = lab.config.host("sink")  # type: ignore[attr-defined]
    assert {"acme.test", "contoso.test", "smallbiz.test"} <= set(RECIPIENT_DOMAINS)
    for domain in RECIPIENT_DOMAINS:
        assert resolve(lab, domain, "MX") == [f"10 {RECIPIENT_MX[domain]}."], domain
        assert resolve(lab, RECIPIENT_MX[domain], "A") == [sink.ipv4], RECIPIENT_MX[domain]
        assert resolve(lab, RECIPIENT_MX[domain], "AAAA") == [sink.ipv6], RECIPIENT_MX[domain]
    tag = uuid.uuid4().hex
    rcpts = [f"rcpt-{tag[:8]}@{d}" for d in RECIPIENT_DOMAINS]
    with smtplib.SMTP(sink.ipv4, 25, source_address=(lab.config.app_addresses[0], 0), timeout=30) as smtp:  # type: ignore[attr-defined]
        smtp.ehlo("app1.lab.test")
        smtp.sendmail("probe@shop.test", rcpts, f"Subject: {tag}\r\n\r\nhi\r\n")
    deadline = time.monotonic() + 30  # the sink stores through its queue
    while True:  # one stored copy per recipient domain (the sink's transport is per domain)
        found = sorted(r for m in read_messages() if m.header("Subject") == tag for r in m.rcpt_to)
        if len(found) >= len(rcpts) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found == sorted(rcpts)


def test_blocklists_answer_with_real_world_semantics(lab: LabHandle) -> None:
    assert resolve(lab, "66.100.51.198.zen.lab.test", "A") == ["127.0.0.2"]
    assert resolve(lab, "68.100.51.198.zen.lab.test", "A") == ["127.255.255.254"]
    assert resolve(lab, "2.0.0.127.zen.lab.test", "A") == ["127.0.0.2"]  # RFC 5782 test entry
    nx = dns.query.udp(dns.message.make_query("72.100.51.198.zen.lab.test", "A"), lab.resolver, timeout=3)
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert resolve(lab, "121.100.51.198.l2.lab.test", "A") == ["127.0.0.2"]  # network scope
    assert resolve(lab, "spammy.test.dbl.lab.test", "A") == ["127.0.1.2"]
    assert any("64500" in t for t in resolve(lab, "72.100.51.198.origin.asn.lab.test", "TXT"))


def test_lab_host_mail_reaches_sink_with_client_ip_and_helo(lab: LabHandle) -> None:
    tag = uuid.uuid4().hex
    script = f"""python3 - <<'EOF'
import smtplib, ssl
s = smtplib.SMTP('sink.lab.test', 25, local_hostname='mta2.lab.test', source_address=('198.51.100.11', 0))
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx); s.ehlo('mta2.lab.test')
body = 'From: probe@shop.test\\r\\nTo: someone@gmail.test\\r\\nSubject: {tag}\\r\\n\\r\\nhi\\r\\n'
s.sendmail('probe@shop.test', ['someone@gmail.test'], body)
s.quit()
EOF"""
    lab.ssh("mta2", script)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [m for m in read_messages() if m.header("Subject") == tag]
        if found:
            break
        time.sleep(0.3)
    assert len(found) == 1
    msg = found[0]
    assert msg.client_ip == "198.51.100.11"
    assert msg.helo == "mta2.lab.test"
    assert msg.rcpt_to == ["someone@gmail.test"] and msg.mail_from == "probe@shop.test"
    assert msg.tls_protocol is not None and msg.tls_protocol.startswith("TLSv1.")


def test_lab_up_twice_is_a_no_op(lab: LabHandle) -> None:
    proc = sendfleet("lab", "up")
    assert "already up: nothing to do" in proc.stderr
    status = json.loads(sendfleet("lab", "status", "--format", "json").stdout)
    assert status["healthy"] and all(p["healthy"] for p in status["parts"])


def test_lab_range_overlapping_the_machine_is_refused(lab: LabHandle) -> None:
    with pytest.raises(UsageError, match=r"192\.0\.2\.0/24"):
        LabConfig(network="192.0.2.0/24")
    # the running lab's bridge holds 198.51.100.0/24: another lab on it would overlap
    other = LabConfig(bridge="sfl9")
    with pytest.raises(UsageError, match=r"overlaps 198\.51\.100"):
        network.check_no_overlap(other)


def test_ssh_runs_a_command_on_a_host(lab: LabHandle) -> None:
    proc = sendfleet("lab", "ssh", "mta1", "hostname", "-f")
    assert proc.stdout.strip() == "mta1.lab.test"
    state = lab.ssh("mta1", "systemctl is-system-running --wait || true").stdout.strip()
    failed = lab.ssh("mta1", "systemctl --failed --no-legend --plain || true").stdout.strip()
    assert state == "running", f"mta1 is {state!r}; failed units: {failed or '(none)'}"


def test_blocklist_and_sink_answers_can_be_changed_and_restored(lab: LabHandle) -> None:
    from sendfleet.lab import control

    name = "80.100.51.198.zen.lab.test"
    control.list_entry("zen.lab.test", "198.51.100.80", "127.0.0.4", "test listing")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = dns.query.udp(dns.message.make_query(name, "A"), lab.config.rbldnsd, timeout=2)  # type: ignore[attr-defined]
            if answer.answer:
                break
            time.sleep(0.3)
        assert [rr.to_text() for rrset in answer.answer for rr in rrset] == ["127.0.0.4"]
    finally:
        assert control.unlist_entry("zen.lab.test", "198.51.100.80")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = dns.query.udp(dns.message.make_query(name, "A"), lab.config.rbldnsd, timeout=2)  # type: ignore[attr-defined]
        if answer.rcode() == dns.rcode.NXDOMAIN:
            break
        time.sleep(0.3)
    assert answer.rcode() == dns.rcode.NXDOMAIN

    control.sink_recipient_action("yahoo.test", "421 4.7.0 rate limited")
    try:
        import smtplib

        with smtplib.SMTP(lab.config.host("sink").ipv4, 25, source_address=("198.51.100.32", 0)) as smtp:  # type: ignore[attr-defined]
            smtp.ehlo("app1.lab.test")
            smtp.mail("a@shop.test")
            code, text = smtp.rcpt("x@yahoo.test")
            assert code == 421 and b"rate limited" in text
    finally:
        control.sink_recipient_action("yahoo.test", None)


def test_tsig_signed_update_is_accepted_and_resolves(lab: LabHandle) -> None:
    import dns.query
    import dns.tsigkeyring
    import dns.update

    from sendfleet import yamlfile

    vars_path = lab.inventory_dir / "group_vars/all/dns_update.yml"
    assert vars_path.stat().st_mode & 0o077 == 0, "the TSIG key file must be 0600"
    conf = yamlfile.load(vars_path)
    keyring = dns.tsigkeyring.from_text({conf["dns_tsig_key_name"]: conf["dns_tsig_secret"]})
    tag = uuid.uuid4().hex
    update = dns.update.UpdateMessage("lab.test", keyring=keyring, keyalgorithm=conf["dns_tsig_algorithm"])
    update.replace(f"t-{tag[:8]}", 5, "TXT", f'"{tag}"')
    assert dns.query.tcp(update, conf["dns_update_server"], timeout=5).rcode() == dns.rcode.NOERROR
    assert resolve(lab, f"t-{tag[:8]}.lab.test", "TXT") == [f'"{tag}"']
    bad = dns.update.UpdateMessage("lab.test")  # unsigned: not authorised
    bad.replace("unsigned", 5, "TXT", '"x"')
    assert dns.query.tcp(bad, conf["dns_update_server"], timeout=5).rcode() in (dns.rcode.NOTAUTH, dns.rcode.REFUSED)
    cleanup = dns.update.UpdateMessage("lab.test", keyring=keyring, keyalgorithm=conf["dns_tsig_algorithm"])
    cleanup.delete(f"t-{tag[:8]}")
    dns.query.tcp(cleanup, conf["dns_update_server"], timeout=5)


def _rcpt_code(sink: str, source: str, recipient: str) -> int:
    """RCPT TO only, then QUIT (nothing is stored); a 421 hangs up, which QUIT tolerates."""
    smtp = smtplib.SMTP(sink, 25, source_address=(source, 0), timeout=10)
    try:
        smtp.ehlo("app.lab.test")
        smtp.mail("probe@shop.test")
        return smtp.rcpt(recipient)[0]
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()


def test_sink_reply_for_one_client_ip_and_recipient(lab: LabHandle) -> None:
    from sendfleet.lab import control

    cfg = lab.config
    sink = cfg.host("sink").ipv4  # type: ignore[attr-defined]
    one, other = cfg.app_addresses[0], cfg.app_addresses[1]  # type: ignore[attr-defined]
    try:
        control.sink_reply("gmail.test", "421 4.7.28 unusual rate", client_ip=one)
        assert _rcpt_code(sink, one, "x@gmail.test") == 421
        assert _rcpt_code(sink, other, "x@gmail.test") == 250
        assert _rcpt_code(sink, one, "x@yahoo.test") == 250
        # precedence: (client IP, address) > (client IP, domain) > address > domain
        control.sink_reply("vip@gmail.test", "OK", client_ip=one)
        control.sink_reply("gmail.test", "450 4.2.1 everyone", client_ip=None)
        assert _rcpt_code(sink, one, "vip@gmail.test") == 250
        assert _rcpt_code(sink, one, "x@gmail.test") == 421
        assert _rcpt_code(sink, other, "x@gmail.test") == 450
        control.sink_reply("gmail.test", None)
        control.sink_reply("vip@gmail.test", None, client_ip=one)
        control.sink_reply("gmail.test", None, client_ip=one)
        assert control.sink_replies() == {}
        assert _rcpt_code(sink, one, "x@gmail.test") == 250
    finally:
        for target, ip in (("gmail.test", one), ("vip@gmail.test", one), ("gmail.test", None)):
            control.sink_reply(target, None, client_ip=ip)


def test_sink_records_concurrent_transactions_per_client_ip_and_domain(lab: LabHandle) -> None:
    import threading

    from sendfleet.lab import control
    from sendfleet.lab.sink import read_messages

    cfg = lab.config
    sink = cfg.host("sink").ipv4  # type: ignore[attr-defined]
    source, bystander = cfg.app_addresses[2], cfg.app_addresses[3]  # type: ignore[attr-defined]
    n, tag = 5, uuid.uuid4().hex
    key = (source, "smallbiz.test")
    all_open, release = threading.Barrier(n + 1, timeout=30), threading.Barrier(n + 1, timeout=30)
    errors: list[BaseException] = []

    def transaction(i: int) -> None:
        try:
            with smtplib.SMTP(sink, 25, source_address=(source, 0), timeout=30) as smtp:
                smtp.ehlo("app.lab.test")
                smtp.mail("conc@shop.test")
                assert smtp.rcpt(f"user{i}@smallbiz.test")[0] == 250
                assert smtp.rcpt(f"again{i}@smallbiz.test")[0] == 250  # same transaction, same domain: one
                all_open.wait()
                release.wait()  # held open while the test looks
                if i % 2 == 0:  # ends at END-OF-MESSAGE; the others end when the connection closes
                    smtp.data(f"From: conc@shop.test\r\nSubject: {tag}-{i}\r\n\r\nhi\r\n")
        except BaseException as err:
            errors.append(err)
            all_open.abort()
            release.abort()

    control.sink_concurrency(reset=True)
    control.sink_connections(reset=True)
    threads = [threading.Thread(target=transaction, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        all_open.wait()
        during = control.sink_concurrency()
        deadline = time.monotonic() + 3  # connections are sampled every 50 ms
        while control.sink_connections().get(source, 0) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        connections = control.sink_connections()
        # one connection, one message after another: never more than one at a time for the bystander
        with smtplib.SMTP(sink, 25, source_address=(bystander, 0), timeout=30) as smtp:
            smtp.ehlo("app.lab.test")
            for i in range(3):
                smtp.sendmail("seq@shop.test", [f"seq{i}@smallbiz.test"], f"Subject: {tag}-seq{i}\r\n\r\nhi\r\n")
        release.wait()
    except BaseException:
        release.abort()  # do not keep the threads waiting for a test that failed
        raise
    finally:
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert during.get(key) == n, during
    assert connections.get(source) == n, connections
    peaks = control.sink_concurrency()
    assert peaks.get(key) == n and peaks.get((bystander, "smallbiz.test")) == 1, peaks
    # every transaction has ended (END-OF-MESSAGE, or the connection closed: seen within 50 ms)
    deadline = time.monotonic() + 5
    while control.sink_concurrency(reset=True).get(key, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert control.sink_concurrency().get(key, 0) == 0
    expected = sorted([f"{tag}-{i}" for i in range(0, n, 2)] + [f"{tag}-seq{i}" for i in range(3)])
    deadline = time.monotonic() + 30  # the sink stores through its queue
    while True:
        stored = sorted(str(m.header("Subject")) for m in read_messages()
                        if (m.header("Subject") or "").startswith(tag))
        if len(stored) >= len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert stored == expected
