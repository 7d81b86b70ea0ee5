"""Faults, access and secrets on the converged lab: no mail lost or sent unsigned, nothing open,
nothing secret shown.

Every test that breaks something does it on ONE sender, mta2 (shared-lab etiquette), and restores it in a
`finally`: OpenDKIM started again, sink answers restored, firewall holes closed, the host's configuration
converged again. Mail of each test carries a unique envelope sender and X-Sendfleet-Tag header, so the
tests never clear the shared sink and never count other people's mail.
"""

from __future__ import annotations

import base64
import json
import os
import re
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import dkim
import dns.resolver
import pytest
import yaml

from tests.lab.conftest import REPO, LabHandle

pytestmark = pytest.mark.lab

FAULT_HOST = "mta2"
SENDER_DOMAIN = "shop.test"
RECIPIENT_DOMAIN = "gmail.test"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
TAG_HEADER = re.compile(rb"^X-Sendfleet-Tag:[ \t]*(\S+)", re.M | re.I)
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)", re.M)
# Files the roles write on a sender: a refused run must leave every one of them as it was.
ROLE_DIRS = ("/etc/postfix", "/etc/opendkim", "/etc/opendkim.conf", "/etc/nftables.conf", "/etc/ssh/sshd_config.d",
             "/etc/sendfleet", "/etc/default/opendkim")


# ---------------------------------------------------------------------------------------------- helpers


def host_ip(lab: LabHandle, name: str) -> str:
    return str(lab.config.host(name).ipv4)  # type: ignore[attr-defined]


def app_address(lab: LabHandle) -> str:
    return str(lab.config.app_addresses[0])  # type: ignore[attr-defined]


def outsider_address(lab: LabHandle) -> str:
    return str(lab.config.outsider)  # type: ignore[attr-defined]


def senders(lab: LabHandle) -> list[str]:
    hosts = yaml.safe_load((lab.inventory_dir / "hosts.yml").read_text())["all"]["children"]["senders"]["hosts"]
    return list(hosts)


def raw_message(sender: str, recipient: str, tag: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: sendfleet fault test {tag}\r\n"
            f"Date: {formatdate(localtime=True)}\r\nMessage-ID: <{tag}@{sender.split('@', 1)[1]}>\r\n"
            f"X-Sendfleet-Tag: {tag}\r\n\r\nfault test message {tag}\r\n").encode()


@dataclass
class Batch:
    """Messages of one test run: a unique sender and recipient, and one tag per message. The senders rewrite the
    envelope sender to the bounce domain's VERP address, so the test's mail is found by its recipient."""

    name: str
    count: int
    recipient: str = ""
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def sender(self) -> str:
        return f"{self.name}-{self.run}@{SENDER_DOMAIN}"

    @property
    def rcpt(self) -> str:
        return self.recipient or f"{self.name}-{self.run}@{RECIPIENT_DOMAIN}"

    def tag(self, i: int) -> str:
        return f"{self.name}-{self.run}-{i:05d}"

    def tags(self) -> list[str]:
        return [self.tag(i) for i in range(self.count)]

    def raw(self, i: int) -> bytes:
        return raw_message(self.sender, self.rcpt, self.tag(i))


@dataclass
class Submitted:
    accepted: list[str] = field(default_factory=list)
    tempfailed: list[str] = field(default_factory=list)


def submit(server: str, source: str, batch: Batch, indices: Sequence[int],
           before: Callable[[int], None] | None = None) -> Submitted:
    """Submit the batch's messages `indices` over as few SMTP sessions as possible, as an application does:
    a 4xx (or a dropped session) leaves the message with the application for a later try; a 5xx is a bug."""
    out = Submitted()
    smtp: smtplib.SMTP | None = None
    try:
        for i in indices:
            if before is not None:
                before(i)
            tag = batch.tag(i)
            try:
                if smtp is None:
                    smtp = smtplib.SMTP(server, 25, source_address=(source, 0), timeout=60)
                    smtp.ehlo("app.lab.test")
                smtp.sendmail(batch.sender, [batch.rcpt], batch.raw(i))
                out.accepted.append(tag)
                continue
            except smtplib.SMTPRecipientsRefused as err:
                code = next(iter(err.recipients.values()))[0]
            except smtplib.SMTPResponseException as err:
                code = err.smtp_code
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                code = 421
            if not 400 <= code < 500:
                raise AssertionError(f"{server} refused {tag} permanently ({code})")
            out.tempfailed.append(tag)
            if smtp is not None:
                try:
                    smtp.close()
                finally:
                    smtp = None
    finally:
        if smtp is not None:
            try:
                smtp.quit()
            except smtplib.SMTPException:
                smtp.close()
    return out


def sink_copies(batch: Batch) -> dict[str, list[Any]]:
    """tag -> every copy of that message the sink stored (matched by the batch's recipient)."""
    from sendfleet.lab.sink import read_messages

    found: dict[str, list[Any]] = {}
    for m in read_messages():
        if batch.rcpt not in m.rcpt_to:
            continue
        match = TAG_HEADER.search(m.raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0])
        found.setdefault(match.group(1).decode() if match else "(no tag)", []).append(m)
    return found


def wait_for_sink(batch: Batch, count: int, timeout: float) -> dict[str, list[Any]]:
    end = time.monotonic() + timeout
    found = sink_copies(batch)
    while len(found) < count and time.monotonic() < end:
        time.sleep(3)
        found = sink_copies(batch)
    return found


def dkim_verifier(resolver_address: str) -> Callable[[bytes], bool]:
    """dkimpy verification with the keys published in lab DNS (cached: one key per domain/selector)."""
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [resolver_address]
    res.lifetime = 10
    cache: dict[str, bytes | None] = {}

    def txt(name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        if qname not in cache:
            try:
                answer = res.resolve(qname, "TXT")
                cache[qname] = b"".join(answer[0].strings)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                cache[qname] = None
        return cache[qname]

    def verify(raw: bytes) -> bool:
        return bool(dkim.verify(raw, dnsfunc=txt))

    return verify


def unsigned_or_bad(copies: dict[str, list[Any]], verify: Callable[[bytes], bool]) -> list[str]:
    bad = []
    for tag, msgs in copies.items():
        for m in msgs:
            sig = m.header("DKIM-Signature")
            if not sig or f"d={SENDER_DOMAIN};" not in sig.replace(" ", "") or not verify(m.raw):
                bad.append(tag)
    return bad


def queue_of(lab: LabHandle, host: str, rcpt: str) -> list[dict[str, Any]]:
    """Postfix queue entries on `host` with recipient `rcpt`, one per queue ID (the envelope sender is the bounce
    domain's return path, the same for every test).

    showq walks the queue directories one after another while qmgr keeps moving files between them, so a
    message that moves from active to deferred during the walk is listed twice (seen right after a reboot,
    when every message comes back through incoming and is deferred again): count queue IDs, not lines."""
    out = lab.ssh(host, "postqueue -j").stdout
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    unique = {e["queue_id"]: e for e in entries
              if any(r.get("address") == rcpt for r in e.get("recipients") or [])}
    return list(unique.values())


def drop_queued(lab: LabHandle, host: str, rcpt: str) -> None:
    """Delete this test's leftover messages from the host's queue (cleanup after a failure)."""
    try:
        ids = [e["queue_id"] for e in queue_of(lab, host, rcpt)]
    except AssertionError:
        return
    for start in range(0, len(ids), 400):
        chunk = "\n".join(ids[start:start + 400])
        lab.ssh(host, f"printf '%s\\n' '{chunk}' | postsuper -d - >/dev/null 2>&1", check=False)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 1.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def playbook(lab: LabHandle, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(lab.inventory_dir), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=3000)


def recap(output: str) -> dict[str, dict[str, int]]:
    tail = output[output.rindex("PLAY RECAP"):] if "PLAY RECAP" in output else ""
    return {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")} for m in RECAP.finditer(tail)}


def play_section(output: str, play: str) -> str:
    """The output of one play: every batch of it (a `serial` play prints its PLAY header once per batch)."""
    chunks = ("\n" + output).split("\nPLAY ")
    return "\n".join("PLAY " + c for c in chunks if c.startswith(f"[{play}]"))


def reconverge(lab: LabHandle, host: str) -> None:
    proc = playbook(lab, "site.yml", "--limit", host)
    summary = recap(proc.stdout).get(host, {})
    if proc.returncode != 0 or summary.get("failed") or summary.get("unreachable"):
        raise AssertionError(f"could not restore {host} by converging it again:\n{proc.stdout[-4000:]}")


def digests(lab: LabHandle, host: str) -> str:
    """Checksums, owners and modes of every file the roles write on `host`."""
    paths = " ".join(ROLE_DIRS)
    return lab.ssh(host, f"find {paths} -type f -exec stat -c '%n %a %U:%G %Y' {{}} + 2>/dev/null | sort; "
                         f"find {paths} -type f -exec sha256sum {{}} + 2>/dev/null | sort; true").stdout


def mail_passes_through(lab: LabHandle, host: str, name: str) -> bool:
    """One message through `host` arrives at the sink, signed (the host is still sending)."""
    batch = Batch(name, 1)
    sent = submit(host_ip(lab, host), app_address(lab), batch, [0])
    if sent.accepted != [batch.tag(0)]:
        return False
    copies = wait_for_sink(batch, 1, timeout=180)
    return len(copies.get(batch.tag(0), [])) == 1 and not unsigned_or_bad(copies, dkim_verifier(lab.resolver))


# ------------------------------------------------------------------------------------------- milter fault


def test_milter_down_part_way_no_mail_leaves_unsigned_and_all_arrive_once(converged: LabHandle) -> None:
    lab = converged
    server, source = host_ip(lab, FAULT_HOST), app_address(lab)
    batch = Batch("fault-milter", 1000)
    verify = dkim_verifier(lab.resolver)
    stopped_at, started_at = 300, 700
    state = {"down": False}

    def toggle(i: int) -> None:
        if i == stopped_at:
            lab.ssh(FAULT_HOST, "systemctl stop opendkim")
            assert lab.ssh(FAULT_HOST, "systemctl is-active opendkim", check=False).stdout.strip() != "active"
            state["down"] = True
        elif i == started_at:
            lab.ssh(FAULT_HOST, "systemctl start opendkim")
            assert wait_until(lambda: lab.ssh(FAULT_HOST, "test -S /var/spool/postfix/opendkim/opendkim.sock",
                                              check=False).returncode == 0, 60), "OpenDKIM socket not back"
            state["down"] = False

    try:
        first = submit(server, source, batch, range(batch.count), before=toggle)
        # While OpenDKIM was down, Postfix must have answered 4xx (milter_default_action = tempfail):
        # the application keeps those messages. None of them may have been taken and sent unsigned.
        assert first.tempfailed, "no message was deferred while OpenDKIM was stopped: the fault did not bite"
        down_tags = {batch.tag(i) for i in range(stopped_at, started_at)}
        accepted_while_down = sorted(down_tags & set(first.accepted))

        # The application retries what was deferred, as it would (a few rounds; OpenDKIM is back).
        pending = [int(t.rsplit("-", 1)[1]) for t in first.tempfailed]
        for _ in range(5):
            if not pending:
                break
            again = submit(server, source, batch, pending)
            pending = [int(t.rsplit("-", 1)[1]) for t in again.tempfailed]
            if pending:
                time.sleep(5)
        assert not pending, f"{len(pending)} messages still refused after OpenDKIM came back"
        lab.ssh(FAULT_HOST, "postqueue -f")

        copies = wait_for_sink(batch, batch.count, timeout=900)
        assert wait_until(lambda: not queue_of(lab, FAULT_HOST, batch.rcpt), 300, step=3), "queue did not drain"
        copies = sink_copies(batch)  # after the queue drained: any duplicate has arrived by now

        bad = unsigned_or_bad(copies, verify)
        assert not bad, f"{len(bad)} messages reached the sink unsigned or with a bad signature: {bad[:5]}"
        assert not accepted_while_down, f"taken while OpenDKIM was down: {accepted_while_down[:5]}"
        missing = sorted(set(batch.tags()) - set(copies))
        assert not missing, f"{len(missing)} of {batch.count} never arrived: {missing[:5]}"
        extra = sorted(set(copies) - set(batch.tags()))
        assert not extra, f"unexpected messages from this run's sender: {extra[:5]}"
        dupes = {t: len(c) for t, c in copies.items() if len(c) != 1}
        assert not dupes, f"{len(dupes)} messages arrived more than once: {list(dupes.items())[:5]}"
    finally:
        if state["down"] or lab.ssh(FAULT_HOST, "systemctl is-active opendkim", check=False).stdout.strip() != "active":
            lab.ssh(FAULT_HOST, "systemctl start opendkim", check=False)
        drop_queued(lab, FAULT_HOST, batch.rcpt)


# ----------------------------------------------------------------------------------------- reboot fault


def pid1_start(lab: LabHandle, host: str) -> str | None:
    """Start time of the host's PID 1 (changes on every boot), or None while the host does not answer."""
    try:
        proc = lab.ssh(host, "cut -d' ' -f22 /proc/1/stat", check=False)
    except subprocess.TimeoutExpired:
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def sink_rcpt_reply(lab: LabHandle, recipient: str) -> int:
    """The sink's reply code to RCPT TO:<recipient> in a new session (nothing is sent)."""
    try:
        with smtplib.SMTP(host_ip(lab, "sink"), 25, timeout=20) as smtp:
            smtp.ehlo("probe.lab.test")
            smtp.mail("")
            code, _ = smtp.rcpt(recipient)
            smtp.rset()
            return int(code)
    except smtplib.SMTPServerDisconnected:
        return 421


def test_queue_survives_reboot_and_every_message_arrives_once(converged: LabHandle) -> None:
    from sendfleet.lab.control import sink_recipient_action

    lab = converged
    server, source = host_ip(lab, FAULT_HOST), app_address(lab)
    batch = Batch("fault-reboot", 1000)
    # The sink refuses only this run's recipient address (an access(5) key more specific than the domain):
    # other people's mail to the sink keeps flowing.
    refusal_key = batch.rcpt
    boot_before = pid1_start(lab, FAULT_HOST)
    assert boot_before, f"{FAULT_HOST} does not answer"
    try:
        sink_recipient_action(refusal_key, "421 4.7.0 try later")
        # smtpd processes load the table when they start: wait until a new session gets the 421.
        assert wait_until(lambda: sink_rcpt_reply(lab, refusal_key) == 421, 60), "the sink does not refuse yet"
        sent = submit(server, source, batch, range(batch.count))
        assert not sent.tempfailed, f"{len(sent.tempfailed)} messages refused at submission"
        assert wait_until(lambda: len(queue_of(lab, FAULT_HOST, batch.rcpt)) == batch.count, 120, step=2), \
            f"not all {batch.count} messages are queued on {FAULT_HOST}"
        # Let the first delivery attempts meet the 421 (the messages are deferred, on disk).
        assert wait_until(lambda: any(e.get("queue_name") == "deferred" for e in queue_of(lab, FAULT_HOST,
                                                                                         batch.rcpt)), 180, 3)
        assert not sink_copies(batch), "the sink accepted mail it was told to refuse"

        lab.ssh(FAULT_HOST, "systemctl reboot", check=False)
        assert wait_until(lambda: pid1_start(lab, FAULT_HOST) not in (None, boot_before), 300, step=2), \
            f"{FAULT_HOST} did not come back from the reboot"
        lab.ssh(FAULT_HOST, "timeout 180 systemctl is-system-running --wait >/dev/null 2>&1; true")
        active = lab.ssh(FAULT_HOST, "systemctl is-active postfix opendkim", check=False).stdout.split()
        assert active == ["active", "active"], f"after the reboot: postfix/opendkim {active}"
        queued = queue_of(lab, FAULT_HOST, batch.rcpt)
        assert len(queued) == batch.count, f"{len(queued)} of {batch.count} messages left in the queue after reboot"

        sink_recipient_action(refusal_key, None)
        lab.ssh(FAULT_HOST, "postqueue -f")
        copies = wait_for_sink(batch, batch.count, timeout=900)
        assert wait_until(lambda: not queue_of(lab, FAULT_HOST, batch.rcpt), 300, step=3), "queue did not drain"
        copies = sink_copies(batch)
        missing = sorted(set(batch.tags()) - set(copies))
        assert not missing, f"{len(missing)} of {batch.count} lost across the reboot: {missing[:5]}"
        dupes = {t: len(c) for t, c in copies.items() if len(c) != 1}
        assert not dupes, f"{len(dupes)} messages arrived more than once: {list(dupes.items())[:5]}"
        bad = unsigned_or_bad(copies, dkim_verifier(lab.resolver))
        assert not bad, f"{len(bad)} arrived unsigned or with a bad signature: {bad[:5]}"
    finally:
        sink_recipient_action(refusal_key, None)
        wait_until(lambda: pid1_start(lab, FAULT_HOST) is not None, 300, step=2)
        drop_queued(lab, FAULT_HOST, batch.rcpt)


# ---------------------------------------------------------------------------------------- rollout fault


@pytest.fixture
def ssh_to_fault_host_blocked(converged: LabHandle) -> Iterator[str]:
    """New TCP connections from this machine to mta2:22 are reset (nft table on the machine, only that
    address and port); removed afterwards whatever happens."""
    ip = host_ip(converged, FAULT_HOST)
    table = f"sendfleet_fault_{os.getpid()}"
    rules = (f"table ip {table} {{\n chain output {{\n  type filter hook output priority 0; policy accept;\n"
             f"  ip daddr {ip} tcp dport 22 ct state new counter reject with tcp reset\n }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True)
    try:
        yield ip
    finally:
        subprocess.run(["nft", "delete", "table", "ip", table], check=False, capture_output=True)


def test_rollout_with_one_sender_unreachable_converges_the_others(converged: LabHandle,
                                                                  ssh_to_fault_host_blocked: str) -> None:
    lab = converged
    others = [h for h in senders(lab) if h != FAULT_HOST]
    with tempfile.TemporaryDirectory() as cp_dir:  # fresh SSH control sockets: no reuse of open connections
        proc = playbook(lab, "site.yml", env={"ANSIBLE_SSH_CONTROL_PATH_DIR": cp_dir})
    out = proc.stdout
    result = recap(out)
    assert proc.returncode != 0, "site.yml reported success with a sender unreachable"
    mine = result.get(FAULT_HOST, {})
    # Reported either as unreachable, or (senders.yml leaves it out and fails it at the end) as a failure
    # after an UNREACHABLE answer: never as converged.
    reported = mine.get("unreachable", 0) >= 1 or (
        mine.get("failed", 0) >= 1 and re.search(rf"fatal: \[{FAULT_HOST}\]: UNREACHABLE", out) is not None)
    assert reported, f"{FAULT_HOST} not reported unreachable: {result}\n{out[-3000:]}"
    assert f"[{FAULT_HOST}]" not in play_section(out, "Converge the senders"), f"{FAULT_HOST} was 'converged'"
    for host in others:
        r = result.get(host)
        assert r and r["failed"] == 0 and r["unreachable"] == 0 and r["ok"] > 0, f"{host} did not converge: {r}"
        assert f"[{host}]" in play_section(out, "Converge the senders"), f"{host} was not converged:\n{out[-3000:]}"


@pytest.mark.parametrize(("max_fail", "third_reached"), [(None, False), (50, True)])
def test_rollout_stops_per_max_fail_percentage_and_running_hosts_keep_sending(
        converged: LabHandle, max_fail: int | None, third_reached: bool) -> None:
    """Batches of 2 (senders_serial): the first batch holds mta1 and mta2; mta2's new main.cf fails
    `postfix check` (a value only mta2 gets). With the shipped max_fail_percentage (0) the rollout stops
    there and the next batch is never touched; with 50 % one failure in two is tolerated and it goes on.
    Either way every sender keeps sending, mta2 with its previous configuration (validated before reload)."""
    lab = converged
    hosts = senders(lab)
    assert hosts[:2] == ["mta1", FAULT_HOST] and len(hosts) >= 3, f"test expects mta1, mta2, mta3...: {hosts}"
    extra: dict[str, Any] = {
        "senders_serial": 2,
        "postfix_main_cf": ("{{ {'default_process_limit': 'many'} if inventory_hostname == '"
                            + FAULT_HOST + "' else {} }}"),
    }
    if max_fail is not None:
        extra["senders_max_fail_percentage"] = max_fail
    try:
        proc = playbook(lab, "site.yml", "-e", json.dumps(extra))
        out = proc.stdout
        result = recap(out)
        converge = play_section(out, "Converge the senders")
        assert proc.returncode != 0, "the run succeeded although mta2's configuration is invalid"
        assert result.get(FAULT_HOST, {}).get("failed", 0) >= 1, f"{FAULT_HOST} did not fail: {result}"
        assert f"fatal: [{FAULT_HOST}]" in converge, converge[-3000:]
        assert result["mta1"]["failed"] == 0 and result["mta1"]["unreachable"] == 0, result
        later = hosts[2:]
        for host in later:
            reached = f"[{host}]" in converge
            assert reached == third_reached, (
                f"{host} {'not ' if third_reached else ''}reached with max_fail_percentage={max_fail}:\n"
                f"{converge[-4000:]}")
            assert result.get(host, {}).get("failed", 0) == 0, result
        # Postfix on mta2 still runs its previous, valid configuration; every sender keeps sending.
        for host in hosts:
            assert mail_passes_through(lab, host, f"fault-rollout-{host}"), f"{host} stopped sending"
    finally:
        reconverge(lab, FAULT_HOST)
    assert lab.ssh(FAULT_HOST, "postfix check && postconf -h default_process_limit").stdout.strip() != "many"


def test_argument_specs_refuse_bad_variables_before_any_change(converged: LabHandle) -> None:
    lab = converged
    before = digests(lab, FAULT_HOST)
    assert "/etc/postfix/main.cf" in before, f"{FAULT_HOST} not converged"
    cases = [
        ("wrong type", {"postfix_recipient_limit": "fast"}, "postfix_recipient_limit"),
        ("wrong type", {"opendkim_key_bits": "lots"}, "opendkim_key_bits"),
        ("unknown pool", {"sender_domains": {SENDER_DOMAIN: {"pool": "nosuchpool", "selectors": ["s2026a"]}}},
         "nosuchpool"),
        ("unknown class in a rule", {"shaping_rules": [{"class": "nosuchclass", "name": "r", "code": 421,
                                                        "action": "suspend", "duration": "1h"}]},
         "shaping_rules[0].class"),
        ("a regex that does not compile", {"shaping_rules": [{"class": "gmail", "name": "r", "text": "([",
                                                              "action": "suspend", "duration": "1h"}]},
         "shaping_rules[0].text"),
        ("a negative limit", {"provider_classes": {"gmail": {"limits": {"connections": -2}}}},
         "provider_classes.gmail.limits.connections"),
    ]
    for case, extra, named in cases:
        proc = playbook(lab, "site.yml", "--limit", FAULT_HOST, "-e", json.dumps(extra))
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{case} {extra}: accepted\n{out[-3000:]}"
        assert named in out, f"{case}: the error does not name {named!r}:\n{out[-3000:]}"
        assert "PLAY [Converge the senders]" not in out or "[mta2]" not in play_section(out, "Converge the senders"), \
            f"{case}: the rollout started"
        assert all(r["changed"] == 0 for r in recap(proc.stdout).values()), f"{case}: something changed"
        assert digests(lab, FAULT_HOST) == before, f"{case}: files on {FAULT_HOST} changed"


# ----------------------------------------------------------------------------------------- relay, access


def tcp_outcome(source: str, address: str, port: int, timeout: float = 4) -> str:
    """'open', 'refused' (RST) or 'dropped' (no answer) for a TCP connection from `source`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.connect((address, port))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "dropped"
    finally:
        sock.close()


def test_nftables_drops_what_is_not_allowed(converged: LabHandle) -> None:
    lab = converged
    mta = host_ip(lab, FAULT_HOST)
    app, outsider, admin = app_address(lab), outsider_address(lab), str(lab.config.bridge_ip)  # type: ignore[attr-defined]
    expected = {
        (app, 25): "open", (app, 587): "open", (admin, 22): "open",  # allowed: the controls that make it fail
        (outsider, 25): "dropped", (outsider, 587): "dropped", (outsider, 22): "dropped",
        (app, 22): "dropped", (admin, 25): "dropped", (admin, 8080): "dropped", (outsider, 8080): "dropped",
    }
    ruleset = lab.ssh(FAULT_HOST, "nft list chain inet sendfleet input", check=False)
    assert ruleset.returncode == 0, f"no sendfleet firewall in force on {FAULT_HOST}: {ruleset.stderr.strip()}"
    got = {key: tcp_outcome(key[0], mta, key[1]) for key in expected}
    assert got == expected, {k: (v, expected[k]) for k, v in got.items() if v != expected[k]}
    assert "policy drop" in ruleset.stdout, ruleset.stdout


def test_relay_from_outsider_is_refused_even_past_the_firewall(converged: LabHandle) -> None:
    lab = converged
    mta, outsider = host_ip(lab, FAULT_HOST), outsider_address(lab)
    batch = Batch("fault-relay", 2)
    # A hole for the outsider in mta2's firewall (Postfix is the second wall); `nft -f` of the role's
    # file afterwards restores the ruleset exactly. (Without a firewall in force, the outsider reaches
    # Postfix anyway; test_nftables_drops_what_is_not_allowed fails for that.)
    firewall = lab.ssh(FAULT_HOST, "nft list table inet sendfleet", check=False).returncode == 0
    if firewall:
        lab.ssh(FAULT_HOST, f"nft insert rule inet sendfleet input ip saddr {outsider} tcp dport {{ 25, 587 }} accept")
    try:
        for i, port in enumerate((25, 587)):
            with smtplib.SMTP(mta, port, source_address=(outsider, 0), timeout=30) as smtp:
                code, ehlo = smtp.ehlo("outsider.example")
                assert code == 250
                assert b"AUTH" not in ehlo or port == 587, f"port {port} offers AUTH to an outsider: {ehlo!r}"
                code, _ = smtp.mail(batch.sender)
                rcpt_code, rcpt_text = smtp.rcpt(batch.rcpt)
                assert 500 <= rcpt_code < 600 or 500 <= code < 600, \
                    f"port {port}: relay for {outsider} not refused: MAIL {code}, RCPT {rcpt_code} {rcpt_text!r}"
                if 200 <= rcpt_code < 300:  # only reached when the assertion above is wrong
                    smtp.data(batch.raw(i))
    finally:
        if firewall:
            lab.ssh(FAULT_HOST, "nft -f /etc/nftables.conf")
    if firewall:
        holes = lab.ssh(FAULT_HOST, "nft list chain inet sendfleet input").stdout
        assert outsider not in holes, f"firewall hole not closed: {holes}"
    time.sleep(10)
    assert not sink_copies(batch), "a relayed message reached the sink"
    assert not queue_of(lab, FAULT_HOST, batch.rcpt), "a relayed message sits in the queue"


def test_submission_needs_the_app_network(converged: LabHandle) -> None:
    """Submission is by network only: no SASL is offered (no password to guess on a sending machine)."""
    lab = converged
    sasl = lab.ssh(FAULT_HOST, "postconf -h smtpd_sasl_auth_enable").stdout.strip()
    relay = lab.ssh(FAULT_HOST, "postconf -h smtpd_relay_restrictions").stdout
    mynetworks = lab.ssh(FAULT_HOST, "postconf -h mynetworks").stdout
    assert sasl == "no" and "sasl" not in relay, (sasl, relay)
    assert "reject_unauth_destination" in relay, relay
    assert "permit_mynetworks" in relay
    assert "198.51.100.32/29" in mynetworks and "198.51.100.40" not in mynetworks, mynetworks
    # An app address submits (the positive control).
    assert mail_passes_through(lab, FAULT_HOST, "fault-submit")


def test_ssh_password_login_is_refused(converged: LabHandle) -> None:
    lab = converged
    mta = host_ip(lab, FAULT_HOST)
    proc = subprocess.run(
        ["ssh", "-v", "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "NumberOfPasswordPrompts=0",
         "-o", "ConnectTimeout=10", "-o", "BatchMode=yes", f"root@{mta}", "true"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr, proc.stderr[-2000:]
    methods = re.findall(r"Authentications that can continue: (\S+)", proc.stderr)
    assert methods and all(m == "publickey" for m in methods), methods
    effective = lab.ssh(FAULT_HOST, "sshd -T").stdout
    for line in ("passwordauthentication no", "kbdinteractiveauthentication no", "permitemptypasswords no"):
        assert line in effective, f"sshd -T lacks {line!r}"


# ------------------------------------------------------------------------------------------------ secrets


def secret_strings(inventory: Path) -> dict[str, list[str]]:
    """The secret values of the lab inventory, as strings a leak would contain: the TSIG secret, each DKIM
    private key's base64 body lines, and any SASL/password variable."""
    out: dict[str, list[str]] = {}
    dns_update = yaml.safe_load((inventory / "group_vars/all/dns_update.yml").read_text()) or {}
    out["TSIG secret"] = [str(dns_update["dns_tsig_secret"])]
    for pem in sorted((inventory / "dkim").glob("*/*.pem")):
        lines = [ln.strip() for ln in pem.read_text().splitlines() if ln.strip() and "-----" not in ln]
        # every full 64-character line is unique to the key; the last (short) line is not used
        out[f"DKIM key {pem.parent.name}/{pem.stem}"] = [ln for ln in lines if len(ln) >= 48]
        der = base64.b64decode("".join(lines))
        out[f"DKIM key {pem.parent.name}/{pem.stem} (one line)"] = [base64.b64encode(der).decode()[64:192]]
    for path in sorted(inventory.rglob("*.yml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict):
            for key, value in data.items():
                if re.search(r"sasl.*pass|password", str(key)) and isinstance(value, str) and len(value) >= 8:
                    out[f"{path.name}: {key}"] = [value]
    assert out["TSIG secret"][0] and any(k.startswith("DKIM key") for k in out), out.keys()
    return out


def leaks(text: str, secrets: dict[str, list[str]]) -> list[str]:
    return [name for name, values in secrets.items() if any(v and v in text for v in values)]


def test_no_secret_in_the_repo(converged: LabHandle) -> None:
    secrets = secret_strings(converged.inventory_dir)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    found: dict[str, list[str]] = {}
    for name in filter(None, files):
        path = REPO / name.decode()
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        hit = leaks(text, secrets)
        if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
            hit.append("a PEM private key")
        if hit:
            found[name.decode()] = hit
    assert not found, f"secrets in tracked files: {found}"
    tracked_inventory = [f for f in files if f.startswith(b"inventories/lab/") and not f.endswith(b"README.md")]
    assert not tracked_inventory, f"lab inventory files are tracked: {tracked_inventory}"
    # Secrets that live in committed inventories must be vaulted.
    for name in filter(None, files):
        if name.startswith(b"inventories/") and re.search(rb"(tsig_secret|password|private_key)\s*:", REPO.joinpath(
                name.decode()).read_bytes()):
            text = REPO.joinpath(name.decode()).read_text()
            for m in re.finditer(r"^\s*\S*(tsig_secret|password|private_key)\s*:\s*(.*)$", text, re.M):
                assert m.group(2).startswith("!vault") or m.group(2) in ("", "null", "~") or "{{" in m.group(2), \
                    f"{name.decode()}: {m.group(0).strip()} is not vaulted"


def test_no_secret_in_ansible_output_even_when_keys_are_redeployed(converged: LabHandle) -> None:
    lab = converged
    secrets = secret_strings(lab.inventory_dir)
    keyfiles = lab.ssh(FAULT_HOST, "find /etc/opendkim/keys -type f").stdout.split()
    assert keyfiles, f"no DKIM keys on {FAULT_HOST}"
    # Make mta2's copy of a key differ, so that the run deploys it again with -v and --diff: even then the
    # task must not show the key. The run itself puts the right key back.
    lab.ssh(FAULT_HOST, f"echo >> {keyfiles[0]}")
    # The DNS play (localhost: TSIG) and mta2 (the DKIM keys) are where secrets are handled.
    proc = playbook(lab, "site.yml", "-v", "--diff", "--limit", f"{FAULT_HOST},localhost")
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        reconverge(lab, FAULT_HOST)
    assert proc.returncode == 0, out[-4000:]
    assert recap(proc.stdout).get(FAULT_HOST, {}).get("changed", 0) >= 1, "the key was not deployed again"
    found = leaks(out, secrets)
    assert not found, f"ansible-playbook -v --diff output shows: {found}"
    assert "PRIVATE KEY" not in out, "a private key header appears in the Ansible output"
    check = playbook(lab, "site.yml", "-v", "--check", "--diff", "--limit", f"{FAULT_HOST},localhost")
    assert not leaks(check.stdout + check.stderr, secrets), "ansible-playbook --check -v --diff shows a secret"


def test_no_secret_in_the_logs(converged: LabHandle) -> None:
    lab = converged
    secrets = secret_strings(lab.inventory_dir)
    for host in [*senders(lab), "sink"]:
        logs = lab.ssh(host, "journalctl --no-pager -o cat 2>/dev/null; cat /var/log/mail.log /var/log/syslog "
                             "/var/log/postfix.log /var/log/messages 2>/dev/null; true").stdout
        assert logs.strip(), f"{host}: no logs read"
        found = leaks(logs, secrets)
        assert not found, f"{host}: logs show {found}"


def test_key_files_have_the_promised_modes(converged: LabHandle) -> None:
    lab = converged
    for host in senders(lab):
        listing = lab.ssh(host, "find /etc/opendkim/keys -type f -exec stat -c '%n|%a|%U:%G' {} +").stdout
        keys = [line.split("|") for line in listing.splitlines() if line.strip()]
        assert keys, f"{host}: no key files"
        for path, mode, owner in keys:
            assert mode in ("600", "640"), f"{host}: {path} mode {mode}"
            assert owner.split(":")[0] in ("opendkim", "root"), f"{host}: {path} owner {owner}"
        socket_dir = lab.ssh(host, "stat -c '%a' /var/spool/postfix/opendkim").stdout.strip()
        assert not int(socket_dir, 8) & 0o007, f"{host}: the milter socket directory is open to others ({socket_dir})"
    inventory = lab.inventory_dir
    for pem in (inventory / "dkim").glob("*/*.pem"):
        assert pem.stat().st_mode & 0o777 == 0o600, f"{pem}: mode {oct(pem.stat().st_mode & 0o777)}"
    secret_file = inventory / "group_vars/all/dns_update.yml"
    assert secret_file.stat().st_mode & 0o077 == 0, f"{secret_file}: readable by group/others"
