"""The lab's alert recorder: a real server on 127.0.0.1 (a free port, in a thread) given Alertmanager webhook
payloads (version 4, as Alertmanager 0.25 posts them), read back from its file and from GET /alerts."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sendfleet.lab import alertrecorder, alerts, zonedata
from sendfleet.lab.alertrecorder import Alert, find, read_file
from sendfleet.lab.config import LabConfig
from sendfleet.lab.system import LabError

# What Alertmanager 0.25 POSTs to a webhook_config with send_resolved: true (one firing, one resolved alert).
PAYLOAD: dict[str, Any] = {
    "receiver": "lab",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "NodeExporterDown", "group": "senders", "host": "mta1",
                       "instance": "198.51.100.10:9100", "job": "node", "severity": "critical"},
            "annotations": {"summary": "mta1: node exporter unreachable"},
            "startsAt": "2026-12-03T03:20:05.123Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://198.51.100.22:9090/graph?g0.expr=up%7Bjob%3D%22node%22%7D+%3D%3D+0",
            "fingerprint": "3b1e5c1f0a6f9e2d",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "IPListed", "host": "mta2", "ip": "198.51.100.70", "severity": "warning"},
            "annotations": {},
            "startsAt": "2026-12-03T02:50:00Z",
            "endsAt": "2026-12-03T03:19:30Z",
            "generatorURL": "http://198.51.100.22:9090/graph",
            "fingerprint": "77aa01bc9d2e4f10",
        },
    ],
    "groupLabels": {"alertname": "NodeExporterDown"},
    "commonLabels": {"alertname": "NodeExporterDown", "job": "node"},
    "commonAnnotations": {},
    "externalURL": "http://198.51.100.22:9093",
    "version": "4",
    "groupKey": '{}/{}:{alertname="NodeExporterDown", host="mta1"}',
    "truncatedAlerts": 0,
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "spool" / "alerts.jsonl"  # the spool folder does not exist yet: the recorder makes it
    srv = alertrecorder.make_server("127.0.0.1", 0, path)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", path
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_notification_is_recorded_alert_by_alert_and_served_back(server: tuple[str, Path]) -> None:
    url, path = server
    assert post(url + "/", json.dumps(PAYLOAD).encode()) == (200, {"recorded": 2})
    alerts = read_file(path)
    assert [(a.name, a.status, a.receiver) for a in alerts] == [
        ("NodeExporterDown", "firing", "lab"), ("IPListed", "resolved", "lab")]
    first = alerts[0]
    assert first.labels == PAYLOAD["alerts"][0]["labels"]
    assert first.annotations == {"summary": "mta1: node exporter unreachable"}
    assert (first.starts_at, first.ends_at, first.fingerprint) == (
        "2026-12-03T03:20:05.123Z", "0001-01-01T00:00:00Z", "3b1e5c1f0a6f9e2d")
    assert alerts[1].ends_at == "2026-12-03T03:19:30Z"
    assert alerts[0].received == alerts[1].received > 1.7e9
    # every line is one JSON record with exactly these fields
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert set(json.loads(lines[0])) == {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint",
                                         "receiver", "received"}
    with urllib.request.urlopen(url + "/alerts", timeout=10) as resp:
        served = json.loads(resp.read())
    assert [alertrecorder.from_record(r) for r in served] == alerts
    # a second notification is appended after the first
    assert post(url + "/", json.dumps({**PAYLOAD, "alerts": PAYLOAD["alerts"][:1]}).encode())[0] == 200
    assert [a.name for a in read_file(path)] == ["NodeExporterDown", "IPListed", "NodeExporterDown"]


@pytest.mark.parametrize(("body", "error"), [
    (b'{"version": "4", "alerts": [', "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'["version", "4"]', "JSON object"),
    (json.dumps({**PAYLOAD, "version": "3"}).encode(), "version '3'"),
    (json.dumps({**PAYLOAD, "alerts": {}}).encode(), "alerts must be a list"),
    (json.dumps({**PAYLOAD, "alerts": [PAYLOAD["alerts"][0], {**PAYLOAD["alerts"][1], "status": "pending"}]}).encode(),
     "alerts[1].status 'pending'"),
    (json.dumps({**PAYLOAD, "alerts": [{**PAYLOAD["alerts"][0], "labels": {"alertname": 1}}]}).encode(),
     "alerts[0].labels must be an object of strings"),
])
def test_a_malformed_body_is_refused_and_nothing_is_written(server: tuple[str, Path], body: bytes, error: str) -> None:
    url, path = server
    code, answer = post(url + "/", body)
    assert code == 400 and error in answer["error"], answer
    assert not path.exists() or path.read_text() == ""  # not even the valid first alert of a bad payload
    assert post(url + "/elsewhere", json.dumps(PAYLOAD).encode())[0] == 404
    assert read_file(path) == []


def test_reading_leaves_a_line_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    assert read_file(path) == []  # nothing recorded yet
    alerts = alertrecorder.parse_payload(json.dumps(PAYLOAD).encode(), 1_800_000_000.0)
    whole = "".join(json.dumps(alertrecorder.to_record(a)) + "\n" for a in alerts)
    path.write_text(whole[:-20])  # the second line is half written
    assert read_file(path) == alerts[:1]
    path.write_text(whole)
    assert read_file(path) == alerts


def test_find_matches_name_status_labels_and_time() -> None:
    def alert(name: str, status: str, host: str, received: float) -> Alert:
        return Alert(status, {"alertname": name, "host": host}, {}, "", "", "", "lab", received)

    alerts = [alert("NodeExporterDown", "firing", "mta1", 10.0), alert("NodeExporterDown", "resolved", "mta1", 20.0),
              alert("NodeExporterDown", "firing", "mta2", 30.0), alert("IPListed", "firing", "mta1", 40.0)]
    assert find(alerts, "NodeExporterDown", "firing") == [alerts[0], alerts[2]]
    assert find(alerts, "NodeExporterDown", "firing", {"host": "mta2"}) == [alerts[2]]
    assert find(alerts, "NodeExporterDown", None, {"host": "mta1"}) == alerts[:2]
    assert find(alerts, "NodeExporterDown", "firing", since=15.0) == [alerts[2]]
    assert find(alerts, "NodeExporterDown", "firing", {"host": "mta3"}) == []


def test_the_sink_unit_runs_this_module_on_the_recorders_port_and_file() -> None:
    unit = zonedata.ALERT_RECORDER_UNIT
    assert (f"ExecStart=/usr/bin/python3 {zonedata.ALERT_RECORDER_SCRIPT} --port 9095 "
            "--file /var/spool/alerts/alerts.jsonl") in unit
    assert "WantedBy=multi-user.target" in unit and "Restart=always" in unit


def test_tests_wait_for_an_alert_in_the_sinks_tree(tmp_path: Path) -> None:
    """sendfleet.lab.alerts reads the file where the sink's recorder writes it, in the lab's state folder."""
    with pytest.raises(LabError, match="lab is not up"):
        alerts.read_alerts(tmp_path)
    cfg = LabConfig(state_dir=tmp_path)
    (tmp_path / "lab.json").write_text(cfg.to_json())
    path = alerts.alerts_file(tmp_path)
    assert path == tmp_path / "hosts" / "sink" / "root" / "var" / "spool" / "alerts" / "alerts.jsonl"
    assert alerts.read_alerts(tmp_path) == []
    recorder = alertrecorder.Recorder(path)
    since = time.time()
    old = alertrecorder.parse_payload(json.dumps(PAYLOAD).encode(), since - 60)  # before the test: not waited for
    recorder.append(old)
    later = threading.Timer(0.3, lambda: recorder.append(
        alertrecorder.parse_payload(json.dumps(PAYLOAD).encode(), time.time())))
    later.start()
    try:
        found = alerts.wait_for_alert("NodeExporterDown", "firing", labels={"host": "mta1"}, since=since,
                                      timeout=10, state_dir=tmp_path)
    finally:
        later.join()
    assert found.received >= since and found.labels["host"] == "mta1"
    assert alerts.wait_for_alert("IPListed", "resolved", timeout=0, state_dir=tmp_path) == old[1]
    with pytest.raises(LabError, match=r"no alert NodeExporterDown resolved .*received: IPListed resolved mta2, "
                                       r"NodeExporterDown firing mta1"):
        alerts.wait_for_alert("NodeExporterDown", "resolved", timeout=0.6, since=since, state_dir=tmp_path)
    assert alerts.clear(tmp_path) == 4
    assert alerts.read_alerts(tmp_path) == [] and path.exists()
