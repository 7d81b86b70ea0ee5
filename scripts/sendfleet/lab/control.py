"""Changing the lab under running tests, as the world changes under a fleet: list or unlist an address in
the lab's blocklists (rbldnsd reloads its data within a second), or make the sink answer a recipient domain
with a given SMTP reply (e.g. `421 4.7.0 rate limited`)."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from sendfleet.atomicfile import write_atomic
from sendfleet.errors import UsageError
from sendfleet.lab.config import DEFAULT_STATE_DIR, LabConfig
from sendfleet.lab.hosts import ssh_command
from sendfleet.lab.lab import lab_key, running_config
from sendfleet.lab.system import LabError

# zone -> (dataset file for IPv4 entries, for IPv6 entries, for domain entries)
DATASETS: dict[str, dict[str, str]] = {
    "zen.lab.test": {"ipv4": "zen4", "ipv6": "zen6"},
    "l2.lab.test": {"ipv4": "l2"},
    "dbl.lab.test": {"domain": "dbl"},
}


def _lab(state_dir: Path) -> LabConfig:
    cfg = running_config(state_dir)
    if cfg is None:
        raise LabError("the lab is not up: run 'sendfleet lab up'")
    return cfg


def _dataset(cfg: LabConfig, zone: str, entry: str) -> tuple[Path, str]:
    if zone not in DATASETS:
        raise UsageError(f"--zone {zone}: the lab's editable blocklists are {', '.join(DATASETS)}")
    try:
        addr = ipaddress.ip_network(entry, strict=False)
        kind, key = ("ipv4" if addr.version == 4 else "ipv6"), str(addr if addr.num_addresses > 1 else addr[0])
        if kind == "ipv6" and addr.num_addresses == 1:
            key = f"{addr[0]}/128"
    except ValueError:
        kind, key = "domain", entry.lower().rstrip(".")
    name = DATASETS[zone].get(kind)
    if name is None:
        raise UsageError(f"{entry}: {zone} takes no {kind} entries")
    return cfg.state_dir / "services" / "rbldnsd" / "data" / name, key


def list_entry(zone: str, entry: str, code: str = "127.0.0.2", reason: str = "listed by a lab test",
               state_dir: Path = DEFAULT_STATE_DIR) -> None:
    path, key = _dataset(_lab(state_dir), zone, entry)
    lines = [ln for ln in path.read_text().splitlines() if ln.split(" ", 1)[0] != key]
    lines.append(f"{key} :{code}:{reason}")
    write_atomic(path, "\n".join(lines) + "\n")


def unlist_entry(zone: str, entry: str, state_dir: Path = DEFAULT_STATE_DIR) -> bool:
    path, key = _dataset(_lab(state_dir), zone, entry)
    lines = path.read_text().splitlines()
    kept = [ln for ln in lines if ln.split(" ", 1)[0] != key]
    if kept != lines:
        write_atomic(path, "\n".join(kept) + "\n")
    return kept != lines


def sink_recipient_action(domain: str, action: str | None, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Make the sink answer RCPT TO for `domain` with `action` (e.g. '421 4.7.0 rate limited';
    None restores normal acceptance), then reload the sink's Postfix."""
    cfg = _lab(state_dir)
    sink = cfg.host("sink")
    path = cfg.host_root(sink) / "etc/postfix/sink_recipient_access"
    domain = domain.lower().rstrip(".")
    lines = [ln for ln in path.read_text().splitlines() if ln.split(" ", 1)[0] != domain]
    if action is not None:
        lines.append(f"{domain} {action}")
    write_atomic(path, "\n".join(lines) + "\n")
    key = lab_key(cfg)
    proc = subprocess.run(ssh_command(cfg, sink, key, "postfix reload"), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise LabError(f"sink: postfix reload failed: {proc.stderr.strip()}")
    first = action.split()[0] if action else "250"
    if first.isdecimal():  # an access(5) action without a code (e.g. DEFER_IF_PERMIT) is not confirmed
        _await_rcpt_reply(cfg, domain, int(first))


def _await_rcpt_reply(cfg: LabConfig, domain: str, code: int, timeout: float = 20.0) -> None:
    """Return once the sink answers RCPT TO for `domain` (or that one address) with `code`. `postfix reload` is
    asynchronous: an smtpd started before it may still answer from the old table for a moment, so the change is
    confirmed, not assumed (RCPT only, then QUIT: nothing is stored; after a 421 the sink hangs up, which QUIT
    tolerates)."""
    import smtplib
    import time

    deadline = time.monotonic() + timeout
    got: object = None
    while time.monotonic() < deadline:
        answered = False
        try:
            with smtplib.SMTP(cfg.host("sink").ipv4, 25, source_address=(cfg.app_addresses[0], 0),
                              timeout=10) as smtp:
                smtp.ehlo("control.lab.test")
                smtp.mail("")
                # the access table's key: a domain, or one recipient address
                got = smtp.rcpt(domain if "@" in domain else f"sink-control-probe@{domain}")[0]
                answered = got == code
        except (OSError, smtplib.SMTPException) as err:
            if not answered:  # an error on QUIT after the awaited answer does not matter
                got = err
        if answered:
            return
        time.sleep(0.2)
    raise LabError(f"sink: RCPT for {domain} still answers {got} after the reload, expected {code}")
