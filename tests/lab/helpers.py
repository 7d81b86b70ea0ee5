"""Helpers for lab tests that drive ansible-playbook and mail: run a playbook and read its PLAY RECAP, read the
lab inventory's model, submit mail from an app address, wait for tagged messages at the sink.

Import them (`from tests.lab.helpers import submit, wait_for`) rather than copying them into a test module.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import dns.resolver
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
APP_ADDRESS = "198.51.100.32"
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)"
                   r"\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.M)


def run_playbook(inventory: Path, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PATH": path}
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory), playbook, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3000)


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of an ansible-playbook run: host -> {ok, changed, unreachable, failed}."""
    tail = output[output.rindex("PLAY RECAP"):] if "PLAY RECAP" in output else ""
    keys = ("ok", "changed", "unreachable", "failed")
    return {m["host"]: {k: int(m[k]) for k in keys} for m in RECAP.finditer(tail)}


def changed_tasks(output: str) -> list[str]:
    """'TASK name: host' for every task (or handler) of an ansible-playbook run that reported a change."""
    out: list[str] = []
    task = ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed: ["):
            out.append(f"{task}: {line.split('[', 1)[1].split(']', 1)[0]}")
    return out


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.exists() else None


def inventory_model(inventory: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(sender_domains, host -> sending_ips) from the lab inventory."""
    pools = load_yaml(inventory / "group_vars" / "all" / "pools.yml")
    hosts = load_yaml(inventory / "hosts.yml")["all"]["children"]["senders"]["hosts"]
    sending = {}
    for host in hosts:
        host_vars = load_yaml(inventory / "host_vars" / f"{host}.yml") or {}
        sending[host] = [{**e, "ip": str(e["ip"])} for e in host_vars.get("sending_ips", [])]
    return pools["sender_domains"], sending


def host_address(inventory: Path, host: str) -> str:
    hosts = load_yaml(inventory / "hosts.yml")["all"]["children"]["senders"]["hosts"]
    return str(hosts[host]["ansible_host"])


def resolver(address: str) -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [address]
    res.lifetime = 5
    return res


def txt_lookup(res: dns.resolver.Resolver) -> Callable[..., bytes | None]:
    """A dkimpy `dnsfunc` over `res`: the TXT record of a name as one byte string, None when there is none."""

    def txt(name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        try:
            answer = res.resolve(qname, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(answer[0].strings)

    return txt


def make_message(sender: str, recipient: str, tag: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"sendfleet test {tag}"
    msg["Date"] = format_datetime(datetime.datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain=sender.split("@", 1)[1])
    msg["X-Sendfleet-Tag"] = tag
    msg.set_content(f"test message {tag}\n")
    return msg


def submit(server: str, messages: list[EmailMessage], source: str = APP_ADDRESS) -> None:
    """Submit messages in one SMTP session from `source` to `server`:25."""
    with smtplib.SMTP(server, 25, source_address=(source, 0), timeout=30) as smtp:
        smtp.ehlo("app.lab.test")
        for msg in messages:
            smtp.send_message(msg)


def wait_for(tag_prefix: str, count: int, deadline_s: float = 300) -> list[Any]:
    """The sink's messages whose X-Sendfleet-Tag starts with tag_prefix, once `count` of them arrived."""
    from sendfleet.lab.sink import read_messages

    end = time.monotonic() + deadline_s
    found: list[Any] = []
    while time.monotonic() < end:
        found = [m for m in read_messages() if (m.header("X-Sendfleet-Tag") or "").startswith(tag_prefix)]
        if len(found) >= count:
            return found
        time.sleep(2)
    return found


def converge(inventory: Path, playbook: str = "site.yml", *args: str) -> dict[str, list[str]]:
    """Run a playbook that must succeed; the tasks that changed something, by host (empty: nothing changed)."""
    proc = run_playbook(inventory, playbook, *args)
    assert proc.returncode == 0, f"{playbook} failed:\n{proc.stdout[-5000:]}{proc.stderr[-2000:]}"
    result = recap(proc.stdout)
    assert result, f"{playbook}: no PLAY RECAP:\n{proc.stdout[-3000:]}"
    changed = changed_tasks(proc.stdout)
    return {h: [t for t in changed if t.endswith(f": {h}")] for h, r in result.items() if r["changed"]}


def wait_for_tags(tags: set[str], deadline_s: float = 120) -> dict[str, Any]:
    """The sink's messages carrying each of `tags` (X-Sendfleet-Tag), by tag, once all arrived or at the deadline."""
    from sendfleet.lab.sink import read_messages

    end = time.monotonic() + deadline_s
    found: dict[str, Any] = {}
    while True:
        for msg in read_messages():
            tag = msg.header("X-Sendfleet-Tag") or ""
            if tag in tags:
                found[tag] = msg
        if set(found) >= tags or time.monotonic() > end:
            return found
        time.sleep(2)


def resume_shaping(ssh: Callable[[str], Any]) -> None:
    """End every throttle and suspension the shaper of a host holds (a test whose replies set them cleans up);
    `ssh(command)` runs a command on that host."""
    script = (
        "import json, subprocess, time\n"
        "paths = json.load(open('/var/lib/sendfleet/monitor/shaping.json')).get('paths') or []\n"
        "for p in paths:\n"
        "    if p['status'] != 'normal' and (p.get('until') is None or p['until'] > time.time()):\n"
        "        subprocess.run(['/opt/sendfleet/venv/bin/python', '-m', 'sendfleet.monitor', 'shaping', 'resume',\n"
        "                        '--ip', p['ip'], '--class', p['class']], check=True, capture_output=True)\n"
    )
    ssh(f"python3 -c {shlex.quote(script)}")
