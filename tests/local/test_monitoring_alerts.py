"""An alert travels the monitoring role's chain on loopback: Prometheus (prometheus.yml and its command line as the
role renders them) evaluates a rule, its Alertmanager (alertmanager.yml and command line as rendered, so without
a cluster port) notifies the webhook receiver, the lab's alert recorder records it firing, then resolved.

Needs Debian's prometheus and prometheus-alertmanager binaries on this machine (their services stay stopped:
this test runs its own processes on 127.0.0.1, free ports, a temporary folder) and ansible-playbook (the venv's).
Nothing is scraped but Prometheus and Alertmanager themselves (monitoring_scrape_groups: []).
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendfleet.lab import alertrecorder
from tests.unit.test_monitoring_role import render


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def args_of(default_file: Path) -> list[str]:
    """The ARGS= of an /etc/default file, split as systemd splits $ARGS."""
    line = next(x for x in default_file.read_text().splitlines() if x.startswith("ARGS="))
    return shlex.split(line.removeprefix("ARGS="))[0].split()


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    path = tmp_path / "alerts.jsonl"
    server = alertrecorder.make_server("127.0.0.1", 0, path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_for(path: Path, status: str, timeout: float) -> alertrecorder.Alert:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = alertrecorder.find(alertrecorder.read_file(path), "RoleChainTest", status, {"severity": "test"})
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {status} RoleChainTest within {timeout} s: {alertrecorder.read_file(path)}")


def test_an_alert_reaches_the_webhook_receiver_firing_then_resolved(tmp_path: Path,
                                                                   recorder: tuple[int, Path]) -> None:
    binaries = {"prometheus": shutil.which("prometheus"), "alertmanager": shutil.which("prometheus-alertmanager")}
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (apt-get install prometheus prometheus-alertmanager)")
    hook_port, alerts = recorder
    prom_port, am_port = free_port(), free_port()
    rules = tmp_path / "no-rules"
    rules.mkdir()
    proc = render(tmp_path, {
        "monitoring_listen_address": "127.0.0.1", "monitoring_prometheus_port": prom_port,
        "monitoring_alertmanager_port": am_port, "monitoring_scrape_groups": [],
        "monitoring_scrape_interval": "1s", "monitoring_evaluation_interval": "1s",
        "monitoring_prometheus_config_file": str(tmp_path / "out" / "prometheus.yml"),
        "monitoring_alertmanager_config_file": str(tmp_path / "out" / "alertmanager.yml"),
        "monitoring_alert_receivers": [{"name": "lab", "webhook": {"url": f"http://127.0.0.1:{hook_port}/"}}],
        "monitoring_alert_route": {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
    }, rules_from=rules)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = tmp_path / "out"
    # Fires from 9 s after now for 10 s, then resolves by itself. Prometheus learns its Alertmanager from its
    # discovery, which publishes every 5 s: an alert that fires before is dropped and only sent a minute later.
    start = int(time.time()) + 9
    (tmp_path / "rules" / "chain.yml").write_text(f"""groups:
  - name: chain
    rules:
      - alert: RoleChainTest
        expr: vector(time()) > {start} < {start + 10}
        labels: {{severity: test}}
        annotations: {{summary: "the role's chain works"}}
""")
    am_cmd = [str(binaries["alertmanager"]), *args_of(out / "prometheus-alertmanager.default"),
              f"--storage.path={tmp_path / 'am-data'}"]
    prom_cmd = [str(binaries["prometheus"]), *args_of(out / "prometheus.default"),
                f"--storage.tsdb.path={tmp_path / 'prom-data'}"]
    assert "--cluster.listen-address=" in am_cmd
    started: list[subprocess.Popen[bytes]] = []
    try:
        for cmd, log in ((am_cmd, "alertmanager.log"), (prom_cmd, "prometheus.log")):
            with (tmp_path / log).open("wb") as fh:
                started.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT))
        firing = wait_for(alerts, "firing", 40)
        assert firing.receiver == "lab" and firing.annotations == {"summary": "the role's chain works"}
        assert firing.labels["alertname"] == "RoleChainTest" and firing.ends_at.startswith("0001-01-01")
        resolved = wait_for(alerts, "resolved", 60)
        assert resolved.fingerprint == firing.fingerprint and resolved.received > firing.received
        assert not resolved.ends_at.startswith("0001-01-01")
    except AssertionError as err:
        logs = "".join(f"\n--- {n}\n" + (tmp_path / n).read_text()[-3000:]
                       for n in ("alertmanager.log", "prometheus.log") if (tmp_path / n).exists())
        raise AssertionError(f"{err}{logs}") from None
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
