"""The monitor's check (`python -m sendfleet.monitor check`) against a real rbldnsd started here on 127.0.0.1:
the vet engine, the drain/restore state machine, the state file and the metrics, end to end (Postfix left out:
apply_postfix false). The fixture starts exactly one rbldnsd with Popen and kills exactly that PID."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sendfleet.core.metrics import parse, samples_of
from sendfleet.monitor import agent

RBLDNSD = "/usr/sbin/rbldnsd"
ZEN_CLEAN = ":127.0.0.2:listed\n127.0.0.2\n"
ZONES = """\
zones:
  - zone: zen.test
    listed: ["127.0.0.2-127.0.0.11"]
    errors: ["127.255.255.0/24"]
"""
IPS = ["198.51.100.70", "198.51.100.72", "198.51.100.73"]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def rbldnsd() -> Iterator[tuple[int, Path]]:
    if not os.path.exists(RBLDNSD):
        pytest.fail(f"{RBLDNSD} is missing (apt-get install rbldnsd)")
    root = Path(tempfile.mkdtemp(prefix="sendfleet-monitor-rbldnsd-"))
    os.chmod(root, 0o755)
    data = root / "zen.txt"
    data.write_text(ZEN_CLEAN)
    os.chmod(data, 0o644)
    port = _free_udp_port()
    cmd = [RBLDNSD, "-n", "-c", "1", "-b", f"127.0.0.1/{port}", "-w", str(root)]
    if os.geteuid() == 0:
        cmd += ["-u", "rbldns"]
    proc = subprocess.Popen([*cmd, "zen.test:ip4set:zen.txt"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"rbldnsd exited: {err}")
            if _answers(port):
                break
            time.sleep(0.1)
        yield port, data
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _answers(port: int) -> bool:
    import dns.message
    import dns.query

    try:
        dns.query.udp(dns.message.make_query("2.0.0.127.zen.test", "A"), "127.0.0.1", port=port, timeout=0.5)
        return True
    except Exception:
        return False


def _set_data(path: Path, text: str) -> None:
    """Rewrite the zone data; rbldnsd (-c 1) reloads when the file's mtime changes."""
    before = path.stat().st_mtime
    path.write_text(text)
    os.utime(path, (before + 2, before + 2))
    time.sleep(2.5)


def _config(tmp: Path, port: int, **extra: Any) -> agent.Config:
    (tmp / "zones.yml").write_text(ZONES)
    data = {
        "zones_file": str(tmp / "zones.yml"),
        "resolvers": [f"127.0.0.1:{port}"],
        "timeout": 0.5,
        "retries": 1,
        "restore_after": 2,
        "members": [{"ip": ip, "pool": "t", "transport": "sf_" + ip.replace(".", "_"), "weight": 1} for ip in IPS],
        "state_file": str(tmp / "state.json"),
        "delivery_file": str(tmp / "delivery.json"),
        "textfile_dir": str(tmp / "prom"),
        "fact_file": str(tmp / "sendfleet_monitor.fact"),
        "lock_file": str(tmp / "lock"),
        "apply_postfix": False,
        **extra,
    }
    return agent.Config(data, "test")


def _state(cfg: agent.Config) -> dict[str, Any]:
    return dict(json.loads(cfg.state_file.read_text()))


def test_check_drains_and_restores(
    rbldnsd: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, data = rbldnsd
    cfg = _config(tmp_path, port)
    assert agent.cmd_check(cfg) == 0
    assert {ip: s["status"] for ip, s in _state(cfg)["ips"].items()} == dict.fromkeys(IPS, "in_service")

    _set_data(data, ZEN_CLEAN + "198.51.100.70 :127.0.0.4:XBL test\n")
    assert agent.cmd_check(cfg) == 0
    state = _state(cfg)
    assert state["ips"]["198.51.100.70"]["status"] == "drained"
    assert state["ips"]["198.51.100.70"]["evidence"][0]["codes"] == ["127.0.0.4"]
    assert state["events"][-1]["action"] == "drain"
    assert "drain 198.51.100.70 (pool t): listed [zen.test listed 127.0.0.4" in capsys.readouterr().out
    prom = parse((tmp_path / "prom" / "sendfleet_monitor.prom").read_text())
    drained = {lbl["ip"]: v for lbl, v in samples_of(prom, "sendfleet_ip_drained")}
    assert drained == {"198.51.100.70": 1, "198.51.100.72": 0, "198.51.100.73": 0}
    fact = json.loads((tmp_path / "sendfleet_monitor.fact").read_text())
    assert fact["drained"] == ["198.51.100.70"] and fact["restarts"] == {} and fact["last_sent"] == {}

    _set_data(data, ZEN_CLEAN)
    agent.cmd_check(cfg)
    assert _state(cfg)["ips"]["198.51.100.70"]["clean_streak"] == 1
    assert _state(cfg)["ips"]["198.51.100.70"]["status"] == "drained"
    agent.cmd_check(cfg)
    assert _state(cfg)["ips"]["198.51.100.70"]["status"] == "in_service"
    assert _state(cfg)["events"][-1]["action"] == "restore"


def test_error_answer_and_dead_resolver_change_nothing(rbldnsd: tuple[int, Path], tmp_path: Path) -> None:
    port, data = rbldnsd
    cfg = _config(tmp_path, port)
    # 127.255.255.254 (query refused) is an error, not a listing: unknown, not drained
    _set_data(data, ZEN_CLEAN + "198.51.100.72 :127.255.255.254:refused\n")
    agent.cmd_check(cfg)
    state = _state(cfg)
    assert state["verdicts"]["198.51.100.72"]["verdict"] == "unknown"
    assert state["ips"]["198.51.100.72"]["status"] == "in_service"
    # a listed IP is drained; then the resolver goes silent: nothing drained, nothing restored
    _set_data(data, ZEN_CLEAN + "198.51.100.73 :127.0.0.2:SBL\n")
    agent.cmd_check(cfg)
    assert _state(cfg)["ips"]["198.51.100.73"]["status"] == "drained"
    dead = _config(tmp_path, _free_udp_port())
    for _ in range(3):
        agent.cmd_check(dead)
        state = _state(dead)
        assert state["ips"]["198.51.100.73"]["status"] == "drained"
        assert all(s["status"] == "in_service" for ip, s in state["ips"].items() if ip != "198.51.100.73")
        assert state["check_ok"] is False and all(z["status"] == "unreachable" for z in state["zones"])
    prom = parse((tmp_path / "prom" / "sendfleet_monitor.prom").read_text())
    assert samples_of(prom, "sendfleet_monitor_check_ok") == [({}, 0.0)]
