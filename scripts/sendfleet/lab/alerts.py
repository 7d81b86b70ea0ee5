"""What the lab's alert receiver recorded: every alert the lab's Alertmanager sent, firing and resolved.

The recorder (`sendfleet.lab.alertrecorder`, the sink's `alert-recorder` unit) appends one JSON line per alert to
its file; tests read that file from the sink's tree on this machine, as `sendfleet.lab.sink` reads the sink's
spool.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from sendfleet.lab.alertrecorder import ALERT_FILE, Alert, find, read_file
from sendfleet.lab.config import DEFAULT_STATE_DIR
from sendfleet.lab.sink import sink_path
from sendfleet.lab.system import LabError


def alerts_file(state_dir: Path = DEFAULT_STATE_DIR) -> Path:
    return sink_path(ALERT_FILE, state_dir)


def read_alerts(state_dir: Path = DEFAULT_STATE_DIR) -> list[Alert]:
    """Every alert the recorder received, oldest first."""
    return read_file(alerts_file(state_dir))


def wait_for_alert(name: str, status: str = "firing", labels: Mapping[str, str] | None = None,
                   timeout: float = 180.0, since: float | None = None,
                   state_dir: Path = DEFAULT_STATE_DIR) -> Alert:
    """The first recorded alert `name` in `status` with every label of `labels`, received at or after `since`
    (e.g. the test's start, a time.time() of this machine: the sink shares its clock); waits up to `timeout`
    seconds for it, then raises LabError listing what was received instead."""
    path = alerts_file(state_dir)
    deadline = time.monotonic() + timeout
    while True:
        alerts = read_file(path)
        found = find(alerts, name, status, labels, since)
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            seen = sorted({f"{a.name} {a.status} {a.labels.get('host', '')}".rstrip() for a in alerts
                           if since is None or a.received >= since})
            raise LabError(f"no alert {name} {status} {dict(labels or {})} within {timeout:.0f} s "
                           f"(received: {', '.join(seen) or 'nothing'}; file {path})")
        time.sleep(0.5)


def clear(state_dir: Path = DEFAULT_STATE_DIR) -> int:
    """Empty the file (the recorder appends to it as before); returns how many alerts it held."""
    path = alerts_file(state_dir)
    count = len(read_file(path))
    if path.exists():
        with path.open("r+") as fh:
            fh.truncate(0)
    return count
