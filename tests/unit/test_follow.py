"""sendfleet.monitor.follow: Postfix's log read from where the last reader stopped, from a file (append,
partial last line, rotation while stopped and while following, truncation, restart from the saved position)
and from the journal (a fake `journalctl` on disk that serves entries after a cursor, and follows)."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sendfleet.errors import CannotCheckError
from sendfleet.monitor import agent, follow
from sendfleet.monitor.follow import Follower

IDENT = "postfix/sf_198_51_100_72/smtp"
T0 = datetime(2026, 11, 27, 20, 30, 0, tzinfo=UTC).timestamp()


def line(n: int, ident: str = IDENT) -> str:
    """A syslog line of message `m<n>` at T0 + n seconds."""
    when = datetime.fromtimestamp(T0 + n, UTC).strftime("%b %d %H:%M:%S")
    return f"{when} mta1 {ident}[812]: m{n}\n"


def append(path: Path, *texts: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(texts))


def read(path: Path, position: dict[str, Any] | None, since: float = 0.0) -> tuple[list[str], dict[str, Any]]:
    f = Follower(str(path), position, since, follow=False, clock=lambda: T0 + 3600)
    return [msg for _, _, msg in f.lines()], f.position


def test_append_and_restart_from_the_position(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    append(log, line(1), "not a syslog line\n", line(2, "postfix/qmgr"))
    got, pos = read(log, None)
    assert got == ["m1", "m2"]
    assert pos == {"source": str(log), "inode": log.stat().st_ino, "offset": log.stat().st_size}
    ts = next(iter(Follower(str(log), None, follow=False, clock=lambda: T0).lines()))
    assert ts == (T0 + 1, IDENT, "m1")
    assert read(log, pos) == ([], pos)
    append(log, line(3), line(4))
    got, pos = read(log, pos)
    assert got == ["m3", "m4"] and pos["offset"] == log.stat().st_size


def test_partial_last_line_is_read_once_complete(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    append(log, line(1), line(2)[:20])
    got, pos = read(log, None)
    assert got == ["m1"] and pos["offset"] == len(line(1))
    got, pos = read(log, pos)
    assert got == [] and pos["offset"] == len(line(1))
    append(log, line(2)[20:], line(3))
    got, pos = read(log, pos)
    assert got == ["m2", "m3"]


def test_offsets_count_bytes_even_for_bad_utf8(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    with open(log, "wb") as handle:
        handle.write(line(1).replace("m1", "m1 \xe9").encode("latin-1") + line(2).replace("m2", "m2 é").encode())
    got, pos = read(log, None)
    assert got == ["m1 \ufffd", "m2 é"] and pos["offset"] == log.stat().st_size
    append(log, line(3))
    assert read(log, pos)[0] == ["m3"]


def test_rotation_while_stopped_finishes_the_old_file(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    append(log, line(1))
    _, pos = read(log, None)
    append(log, line(2), line(3)[:10])  # written after the last read, the last line cut by the rotation
    log.rename(tmp_path / "mail.log.1")
    append(log, line(4))
    got, pos = read(log, pos)
    assert got == ["m2", "m4"]  # the cut line is not a log line: skipped, not waited for
    assert pos == {"source": str(log), "inode": log.stat().st_ino, "offset": log.stat().st_size}
    # rotated away for good (compressed): the new file is read from its start
    append(log, line(5))
    _, pos2 = read(log, None)
    (tmp_path / "mail.log.1").unlink()
    log.rename(tmp_path / "gone")
    append(log, line(6))
    assert read(log, pos2)[0] == ["m6"]


def test_truncated_file_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    append(log, line(1), line(2))
    _, pos = read(log, None)
    with open(log, "w", encoding="utf-8") as handle:
        handle.write(line(3))
    assert read(log, pos)[0] == ["m3"]


def test_first_start_skips_lines_before_since_and_a_foreign_position(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    append(log, line(1), line(2), line(3))
    assert read(log, None, since=T0 + 2)[0] == ["m2", "m3"]
    assert read(log, {"source": "journal", "cursor": "x"}, since=T0 + 3)[0] == ["m3"]
    # with a position of this file, since no longer filters
    assert read(log, {"source": str(log), "inode": log.stat().st_ino, "offset": 0}, since=T0 + 9)[0] == [
        "m1", "m2", "m3"]


def test_a_missing_file_keeps_the_position(tmp_path: Path) -> None:
    pos = {"source": str(tmp_path / "nope"), "inode": 1, "offset": 5}
    assert read(tmp_path / "nope", pos) == ([], pos)


def test_december_lines_read_in_january_are_last_year(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    append(log, f"Dec 31 23:59:59 mta1 {IDENT}[1]: late\n", f"Jan  1 00:00:01 mta1 {IDENT}[1]: early\n")
    jan = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()
    got = list(Follower(str(log), None, follow=False, clock=lambda: jan).lines())
    assert [ts for ts, _, _ in got] == [jan - 31, jan - 29]


class Collector:
    """A following Follower in a thread; its lines in a queue."""

    def __init__(self, source: str, position: dict[str, Any] | None = None, **kw: Any) -> None:
        self.follower = Follower(source, position, 0.0, poll=0.05, clock=lambda: T0 + 3600, **kw)
        self.stop = threading.Event()
        self.out: queue.Queue[str] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            for _, _, msg in self.follower.lines(self.stop):
                self.out.put(msg)
        except BaseException as err:  # handed to the test
            self.error = err

    def take(self, n: int, timeout: float = 5.0) -> list[str]:
        return [self.out.get(timeout=timeout) for _ in range(n)]

    def close(self) -> float:
        started = time.monotonic()
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()
        return time.monotonic() - started


def test_following_a_file_through_partial_lines_rotation_and_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "mail.log"
    looks = []
    real_stat = follow._stat
    late: list[str] = []

    def stat(path: Path) -> os.stat_result | None:
        looks.append(path)
        if late:  # the writer adds to the old file after the follower's last read, before it looks again
            append(tmp_path / "mail.log.1", late.pop())
        return real_stat(path)

    monkeypatch.setattr(follow, "_stat", stat)
    append(log, line(1))
    c = Collector(str(log))
    try:
        assert c.take(1) == ["m1"]
        append(log, line(2)[:15])
        looks.clear()
        time.sleep(0.5)
        assert c.out.empty()
        assert len(looks) <= 15  # one look per poll (0.05 s) while a line is incomplete, not a busy loop
        append(log, line(2)[15:], line(3))
        assert c.take(2) == ["m2", "m3"]
        append(log, line(4))
        late.append(line(5))
        log.rename(tmp_path / "mail.log.1")
        time.sleep(0.2)
        append(log, line(6))
        assert c.take(3) == ["m4", "m5", "m6"]
        with open(log, "w", encoding="utf-8") as handle:
            handle.write("")
        time.sleep(0.2)
        append(log, line(7))
        assert c.take(1) == ["m7"]
        assert c.follower.position == {"source": str(log), "inode": log.stat().st_ino, "offset": len(line(7))}
    finally:
        assert c.close() < 1.5
    assert c.error is None and c.out.empty()
    # a restart from the saved position reads only what came after
    append(log, line(8))
    assert read(log, c.follower.position)[0] == ["m8"]


FAKE_JOURNALCTL = """#!{python}
import json, os, signal, sys, time
args = sys.argv[1:]
with open({calls!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_JOURNAL_FAIL"):
    sys.stderr.write("Failed to open journal: Permission denied\\n")
    sys.exit(2)
entries = {entries!r}
after = args[args.index("--after-cursor") + 1] if "--after-cursor" in args else None

def out(start):
    for i in range(start, len(entries)):
        sys.stdout.write(json.dumps(entries[i]) + "\\n")
    sys.stdout.flush()

start = 0 if after is None else [e.get("__CURSOR") for e in entries].index(after) + 1
out(start)
if "-f" in args:
    sys.stdout.write('{{"__CURSOR": "c9", "__REALTIME_TIMESTAMP": "9000000", "SYSLOG_IDENTIFIER": "p", "MES')
    sys.stdout.flush()
    time.sleep(0.3)
    sys.stdout.write('SAGE": "m9"}}\\nnot json\\n')
    sys.stdout.flush()
    time.sleep(60)
"""


def entry(n: int, message: Any = None) -> dict[str, Any]:
    return {"__CURSOR": f"c{n}", "__REALTIME_TIMESTAMP": str(n * 1_000_000), "SYSLOG_IDENTIFIER": IDENT,
            "MESSAGE": message if message is not None else f"m{n}"}


@pytest.fixture
def journalctl(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    calls = tmp_path / "calls"
    script = tmp_path / "journalctl"
    entries = [entry(1), entry(2, list(b"m2 \xff")), entry(3), {"MESSAGE": "no cursor", "SYSLOG_IDENTIFIER": "x"}]
    script.write_text(FAKE_JOURNALCTL.format(python=sys.executable, calls=str(calls), entries=entries))
    script.chmod(0o755)
    yield str(script), calls


def test_journal_from_since_then_after_the_cursor(journalctl: tuple[str, Path]) -> None:
    exe, calls = journalctl
    f = Follower("journal", None, since=T0, follow=False, journalctl=exe)
    assert list(f.lines()) == [(1.0, IDENT, "m1"), (2.0, IDENT, "m2 \ufffd"), (3.0, IDENT, "m3"),
                               (0.0, "x", "no cursor")]
    assert f.position == {"source": "journal", "cursor": "c3"}  # the last entry that had one
    argv = json.loads(calls.read_text().splitlines()[0])
    assert argv[:4] == ["-o", "json", "--no-pager", "SYSLOG_FACILITY=2"]
    assert argv[argv.index("--since") + 1] == "2026-11-27 20:30:00 UTC" and "-f" not in argv
    again = Follower("journal", {"source": "journal", "cursor": "c1"}, since=T0, follow=False, journalctl=exe)
    assert [m for _, _, m in again.lines()] == ["m2 \ufffd", "m3", "no cursor"]
    assert json.loads(calls.read_text().splitlines()[1])[-2:] == ["--after-cursor", "c1"]
    assert Follower("journal", f.position, follow=False, journalctl=exe).position == f.position


def test_journal_following_stops_on_request(journalctl: tuple[str, Path]) -> None:
    exe, calls = journalctl
    c = Collector("journal", {"source": "journal", "cursor": "c2"}, journalctl=exe)
    try:
        assert c.take(3) == ["m3", "no cursor", "m9"]  # the last entry came in two writes
        assert c.follower.position == {"source": "journal", "cursor": "c9"}
    finally:
        assert c.close() < 1.5
    assert c.error is None
    assert {"-f", "--no-tail"} <= set(json.loads(calls.read_text().splitlines()[0]))


def test_journalctl_failing_is_one_clear_error(journalctl: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    exe, _ = journalctl
    monkeypatch.setenv("FAKE_JOURNAL_FAIL", "1")
    with pytest.raises(CannotCheckError, match="journalctl failed: Failed to open journal: Permission denied"):
        list(Follower("journal", None, follow=False, journalctl=exe).lines())
    with pytest.raises(CannotCheckError, match="journalctl: cannot start it"):
        list(Follower("journal", None, follow=False, journalctl=os.fspath(Path(exe).parent / "none")).lines())


SENT = ("4QzYJ12abcz: to=<alice@gmail.test>, relay=sink.lab.test[198.51.100.20]:25, delay=0.31, "
        "delays=0.05/0.01/0.13/0.12, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4QzYJ1xyz)")


def test_agent_delivery_reads_through_the_follower(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    now = datetime.now(UTC).replace(microsecond=0)
    stamp = now.strftime("%b %d %H:%M:%S")
    append(log, f"{stamp} mta1 {IDENT}[1]: {SENT}\n", f"{stamp} mta1 postfix/sf_198_51_100_72_gmail/smtp[2]: {SENT}\n")
    cfg = agent.Config({"zones_file": str(tmp_path / "zones.yml"), "log_source": str(log),
                        "delivery_file": str(tmp_path / "delivery.json"), "textfile_dir": str(tmp_path),
                        "shaping": {"classes": {"gmail": {}, "other": {}}},
                        "members": [{"ip": "198.51.100.72", "pool": "p", "transport": "sf_198_51_100_72"}]},
                       "config.json")
    assert agent.cmd_delivery(cfg) == 0
    data = json.loads((tmp_path / "delivery.json").read_text())
    assert data["totals"] == [{"ip": "198.51.100.72", "provider": "gmail", "status": "sent", "count": 1},
                              {"ip": "198.51.100.72", "provider": "other", "status": "sent", "count": 1}]
    assert data["position"] == {"source": str(log), "inode": log.stat().st_ino, "offset": log.stat().st_size}
    append(log, f"{stamp} mta1 {IDENT}[1]: {SENT}\n")
    agent.cmd_delivery(cfg)
    data = json.loads((tmp_path / "delivery.json").read_text())
    assert [r["count"] for r in data["totals"]] == [1, 2]
