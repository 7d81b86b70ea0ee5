"""`sendfleet status`: from a fake Prometheus on loopback, and from the monitor's files (--from-dir)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sendfleet.cli import main
from sendfleet.commands import status

NOW = time.time()
S1 = {"instance": "198.51.100.10:9100", "host": "mta1", "job": "node"}


def write_inventory(root: Path, extra: str = "", monitoring: str = "") -> Path:
    inv = root / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  vars: {host_domain: lab.test}\n  children:\n    senders:\n      hosts: {mta1: {}, mta2: {}}\n"
        + monitoring)
    (inv / "group_vars" / "all" / "pools.yml").write_text(
        "pools: {transactional: {}}\nsender_domains: {shop.test: {pool: transactional, selectors: [s1]}}\n"
        "admin_networks: [198.51.100.0/28]\n" + extra)
    return inv


def vector(*samples: tuple[dict[str, str], float]) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [NOW, str(value)]} for labels, value in samples]


RESULTS = {
    status.QUERIES["drained"]: vector(({**S1, "ip": "198.51.100.70", "pool": "t"}, 1),
                                      ({**S1, "ip": "198.51.100.72", "pool": "t"}, 0),
                                      ({**S1, "ip": "198.51.100.73", "pool": "t"}, 0)),
    status.QUERIES["warmup_day"]: vector(({**S1, "ip": "198.51.100.73", "pool": "t"}, 4)),
    status.QUERIES["paths"]: vector(
        ({**S1, "ip": "198.51.100.72", "pool": "t", "provider": "gmail", "state": "suspended"}, 1),
        ({**S1, "ip": "198.51.100.72", "pool": "t", "provider": "yahoo", "state": "throttled"}, 1)),
    status.QUERIES["last_hour"]: vector(
        ({**S1, "ip": "198.51.100.72", "provider": "gmail", "status": "sent"}, 120),
        ({**S1, "ip": "198.51.100.72", "provider": "gmail", "status": "deferred"}, 30),
        ({**S1, "ip": "198.51.100.72", "provider": "gmail", "status": "bounced"}, 2)),
    status.QUERIES["queue_messages"]: vector(({**S1, "queue": "deferred"}, 31), ({**S1, "queue": "active"}, 0)),
    status.QUERIES["queue_oldest"]: vector(({**S1, "queue": "deferred"}, 5400), ({**S1, "queue": "active"}, 0)),
}
ALERTS = [
    {"labels": {"alertname": "SendfleetIPListed", "severity": "critical", **S1, "ip": "198.51.100.70",
                "pool": "t", "zone": "zen.lab.test"},
     "annotations": {"summary": "198.51.100.70 is listed by zen.lab.test (mta1)"}, "state": "firing",
     "activeAt": "2026-12-03T03:00:00Z", "value": "1e+00"},
    {"labels": {"alertname": "SendfleetQueueOldest", "severity": "warning", **S1, "queue": "deferred"},
     "annotations": {"summary": "The oldest deferred message on mta1 is 1h 30m 0s old"}, "state": "firing"},
    {"labels": {"alertname": "SendfleetComplaintRate", "severity": "warning", "sender_domain": "shop.test"},
     "annotations": {"summary": "shop.test complaint rate 0.2% (above 0.1 %)"}, "state": "firing"},
    {"labels": {"alertname": "SendfleetIPDrained", "severity": "warning", **S1, "ip": "198.51.100.70"},
     "annotations": {}, "state": "pending"},
]


class FakePrometheus(BaseHTTPRequestHandler):
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        if url.path == "/api/v1/query":
            query = urllib.parse.parse_qs(url.query)["query"][0]
            self.asked.append(query)
            body: dict[str, Any] = {"status": "success",
                                    "data": {"resultType": "vector", "result": RESULTS.get(query, [])}}
        elif url.path == "/api/v1/alerts":
            body = {"status": "success", "data": {"alerts": ALERTS}}
        else:
            self.send_response(404)
            self.end_headers()
            return
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_from_prometheus(tmp_path: Path, prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path, f"prometheus_url: {prometheus}/\n")
    FakePrometheus.asked.clear()
    assert main(["status", "-i", str(inv), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(FakePrometheus.asked) == sorted(status.QUERIES.values())
    assert data["source"] == f"prometheus {prometheus}"
    hosts = {h["host"]: h for h in data["hosts"]}
    assert set(hosts) == {"mta1", "mta2"}
    assert hosts["mta2"]["error"] and hosts["mta2"]["ips"] == []  # a sender Prometheus knows nothing of
    ips = {i["ip"]: i for i in hosts["mta1"]["ips"]}
    assert {ip: i["state"] for ip, i in ips.items()} == {
        "198.51.100.70": "drained",
        "198.51.100.72": "in service; suspended: gmail; throttled: yahoo",
        "198.51.100.73": "warming day 4",
    }
    assert ips["198.51.100.72"]["last_hour"] == {"gmail": {"sent": 120, "deferred": 30, "bounced": 2}}
    assert ips["198.51.100.70"]["alerts"] == ["SendfleetIPListed"]  # the pending one is not firing
    assert hosts["mta1"]["alerts"] == ["SendfleetQueueOldest"]
    assert hosts["mta1"]["queue"] == {"messages": {"deferred": 31, "active": 0},
                                      "oldest_seconds": {"deferred": 5400.0, "active": 0.0}}
    assert [(a["name"], a["host"]) for a in data["alerts"]] == [
        ("SendfleetIPListed", "mta1"), ("SendfleetComplaintRate", None), ("SendfleetQueueOldest", "mta1")]
    # the table for people says the same
    assert main(["status", "-i", str(inv)]) == 0
    out = capsys.readouterr().out
    for text in ("in service; suspended: gmail; throttled: yahoo", "gmail 120/30/2", "31 (90m)",
                 "SendfleetComplaintRate", "shop.test complaint rate 0.2%", "warming day 4"):
        assert text in out, text


def test_prometheus_of_the_inventory(tmp_path: Path) -> None:
    args = status.argparse.Namespace(prometheus=None)
    monitoring = "    monitoring:\n      hosts: {mon: {ansible_host: 198.51.100.22}}\n"
    from sendfleet.core.inventory import Inventory

    def inventory(root: Path, extra: str = "", mon: str = "") -> Inventory:
        from sendfleet.inventory_io import load_inventory

        return load_inventory(write_inventory(root, extra, mon))

    assert status.prometheus_url(args, inventory(tmp_path / "a", mon=monitoring)) == "http://198.51.100.22:9090"
    assert status.prometheus_url(args, inventory(tmp_path / "b")) is None
    assert status.prometheus_url(args, inventory(tmp_path / "c", "prometheus_url: https://prom.test/\n",
                                                 monitoring)) == "https://prom.test"
    args.prometheus = "http://127.0.0.1:9999"
    assert status.prometheus_url(args, inventory(tmp_path / "d")) == "http://127.0.0.1:9999"


def fixtures(root: Path) -> Path:
    """mta1's files, written now (the queue's messages 1 to 3 minutes old)."""
    now = time.time()
    d = root / "state" / "mta1"
    d.mkdir(parents=True)
    hour = status.maillog.hour_key(now)
    old = status.maillog.hour_key(now - 3 * 3600)
    (d / "config.json").write_text(json.dumps({"members": [
        {"ip": "198.51.100.70", "pool": "t", "transport": "sf_198_51_100_70", "warmup": {"day": 2, "warm": False}},
        {"ip": "198.51.100.72", "pool": "t", "transport": "sf_198_51_100_72", "warmup": {"day": 30, "warm": True}},
        {"ip": "198.51.100.73", "pool": "t", "transport": "sf_198_51_100_73"}]}))
    (d / "state.json").write_text(json.dumps({"ips": {
        "198.51.100.70": {"pool": "t", "status": "in_service"}, "198.51.100.72": {"pool": "t", "status": "in_service"},
        "198.51.100.73": {"pool": "t", "status": "drained"}}}))
    (d / "shaping.json").write_text(json.dumps({"paths": [
        {"ip": "198.51.100.72", "class": "outlook", "status": "throttled", "until": now + 600},
        {"ip": "198.51.100.72", "class": "gmail", "status": "suspended", "until": now - 5},  # over
        {"ip": "198.51.100.70", "class": "other", "status": "suspended", "until": None}]}))
    (d / "delivery.json").write_text(json.dumps({"hours": {
        hour: [{"ip": "198.51.100.72", "provider": "gmail", "status": "sent", "count": 40},
               {"ip": "198.51.100.72", "provider": "gmail", "status": "deferred", "count": 4}],
        old: [{"ip": "198.51.100.72", "provider": "gmail", "status": "sent", "count": 1000}]}}))
    lines = [{"queue_name": "deferred", "queue_id": f"D{i}", "arrival_time": now - 60 * (i + 1),
              "message_size": 10, "sender": "", "recipients": [{"address": "a@gmail.test"}]} for i in range(3)]
    (d / "postqueue.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root / "state"


def test_status_from_the_monitor_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path)
    written = time.time()
    state = fixtures(tmp_path)
    assert main(["status", "-i", str(inv), "--from-dir", str(state), "--format", "json"]) == 0
    elapsed = time.time() - written
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == f"files in {state}" and data["alerts"] is None
    hosts = {h["host"]: h for h in data["hosts"]}
    assert "nothing in" in hosts["mta2"]["error"]
    ips = {i["ip"]: i for i in hosts["mta1"]["ips"]}
    assert {ip: i["state"] for ip, i in ips.items()} == {
        "198.51.100.70": "warming day 2; suspended: other",
        "198.51.100.72": "in service; throttled: outlook",
        "198.51.100.73": "drained",
    }
    assert ips["198.51.100.72"]["last_hour"] == {"gmail": {"sent": 40, "deferred": 4, "bounced": 0}}
    queue = hosts["mta1"]["queue"]
    assert queue["messages"]["deferred"] == 3 and 180 <= queue["oldest_seconds"]["deferred"] <= 180 + elapsed
    assert main(["status", "-i", str(inv), "--from-dir", str(state)]) == 0
    assert "alerts: unknown" in capsys.readouterr().out


def test_a_silent_prometheus_falls_back_to_the_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path, f"prometheus_url: http://127.0.0.1:{closed_port()}\n")
    state = fixtures(tmp_path)
    assert main(["status", "-i", str(inv), "--from-dir", str(state), "--format", "json", "--timeout", "2"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["source"].startswith("files in") and "did not answer" in data["problems"][0]
    assert "reading the senders over SSH instead" in captured.err
    # asked for Prometheus alone, it is an error that says so: exit 3
    assert main(["status", "-i", str(inv), "--source", "prometheus", "--timeout", "2"]) == 3
    assert "did not answer" in capsys.readouterr().err


def test_nothing_reachable_is_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write_inventory(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["status", "-i", str(inv), "--from-dir", str(tmp_path / "empty")]) == 3
    assert "no sender could be read" in capsys.readouterr().err
    assert main(["status", "-i", str(inv), "--source", "prometheus"]) == 2  # no Prometheus named
    assert "no prometheus_url" in capsys.readouterr().err
