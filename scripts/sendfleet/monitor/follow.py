"""Postfix's log as (time, syslog identifier, message) lines, read where the last reader stopped: the one
reader of the log for the monitor agent (`delivery`, on a timer: `follow=False` reads what is written and
returns) and for the shaper (`follow=True`: waits for new lines until told to stop).

Two sources, as `source`:

- `journal`: `journalctl -o json SYSLOG_FACILITY=2` (the mail facility), `-f` when following, from the saved
  cursor (`--after-cursor`), else from `since`. Position: `{"source": "journal", "cursor": ...}`.
- a file path (`/var/log/mail.log`, Postfix's `maillog_file`): read from the saved byte offset of the saved
  inode. Position: `{"source": path, "inode": ..., "offset": ...}`. A file rotated while nobody read it is
  finished first when it is still in the same directory (found by its inode, e.g. mail.log.1); a file
  rotated while following is read to its end before the new one is opened; a truncated file (copytruncate)
  is read again from its start. A last line without its newline is left for later (the offset stops before
  it), except at the end of a rotated file, which will not grow any more.

`position` after a line was yielded covers that line: save it once the line is handled, and a restart from
it neither loses nor reads again any line. Without a position (or with one of another source), lines
older than `since` are skipped.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sendfleet.core import maillog
from sendfleet.errors import CannotCheckError

JOURNAL = "journal"
_CHUNK = 1 << 16
_DAY = 86400.0

Line = tuple[float, str, str]


class Follower:
    """The lines of one log source after a saved position; see the module's description."""

    def __init__(
        self,
        source: str,
        position: Mapping[str, Any] | None = None,
        since: float = 0.0,
        *,
        follow: bool = True,
        poll: float = 0.5,
        journalctl: str = "journalctl",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`poll`: seconds between looks at a file with nothing new, and the longest wait before `stop` is
        noticed (at most 1 s: the caller reacts within a second)."""
        self.source = source
        self.since = since
        self.follow = follow
        self.poll = min(max(poll, 0.01), 1.0)
        self.journalctl = journalctl
        self.clock = clock
        pos = dict(position or {})
        self._fresh = pos.get("source") != source
        self._position: dict[str, Any] = pos

    @property
    def position(self) -> dict[str, Any]:
        """Where the next read starts (JSON-able). Unchanged from the given one until something was read."""
        return dict(self._position)

    def lines(self, stop: threading.Event | None = None) -> Iterator[Line]:
        """(Unix time, syslog identifier, message) of every log line after the position, in order. Following,
        waits for more until `stop` is set; else returns at the end of what is written."""
        stop = stop or threading.Event()
        if self.source == JOURNAL:
            return self._journal(stop)
        return self._file(Path(self.source), stop)

    # ------------------------------------------------------------------------------------------ journal

    def _journal(self, stop: threading.Event) -> Iterator[Line]:
        argv = [self.journalctl, "-o", "json", "--no-pager", "SYSLOG_FACILITY=2"]
        if self.follow:
            argv += ["-f", "--no-tail"]
        cursor = None if self._fresh else self._position.get("cursor")
        if cursor:
            argv += ["--after-cursor", str(cursor)]
        else:
            argv += ["--since", datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")]
        with tempfile.TemporaryFile() as errors:
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, bufsize=0)
            except OSError as err:
                raise CannotCheckError(f"journalctl: cannot start it: {err}") from None
            assert proc.stdout is not None
            try:
                yield from self._journal_entries(proc.stdout, stop)
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                proc.stdout.close()
            if stop.is_set():
                return
            if proc.returncode not in (0, 1) or self.follow:
                errors.seek(0)
                detail = errors.read().decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
                raise CannotCheckError(f"journalctl failed: {detail}")

    def _journal_entries(self, out: IO[bytes], stop: threading.Event) -> Iterator[Line]:
        fd = out.fileno()
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while not stop.is_set():
                if not sel.select(self.poll):
                    continue
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    return  # journalctl ended; a partial last entry is read again from the cursor
                *complete, buffer = (buffer + chunk).split(b"\n")
                for raw in complete:
                    line = _journal_line(raw)
                    if line is None:
                        continue
                    if line[3]:  # an entry without a cursor keeps the last one
                        self._position = {"source": JOURNAL, "cursor": line[3]}
                        self._fresh = False
                    yield line[:3]

    # --------------------------------------------------------------------------------------------- file

    def _file(self, path: Path, stop: threading.Event) -> Iterator[Line]:
        inode = None if self._fresh else self._position.get("inode")
        offset = 0 if self._fresh else int(self._position.get("offset", 0))
        st = _stat(path)
        if inode is not None and (st is None or st.st_ino != inode):
            # rotated since the last read: finish the old file when it is still next to the new one
            old = _find_inode(path.parent, int(inode))
            if old is not None:
                with open(old, "rb") as handle:
                    handle.seek(offset)
                    yield from self._read(handle, int(inode), offset, stop, last=True)
                if stop.is_set():
                    return
            inode, offset = None, 0
        while not stop.is_set():
            try:
                with open(path, "rb") as handle:
                    st = os.fstat(handle.fileno())
                    if inode != st.st_ino or st.st_size < offset:
                        inode, offset = st.st_ino, 0  # another file, or this one truncated
                    handle.seek(offset)
                    # the position names this file from now on, even before its first line
                    self._position = {"source": self.source, "inode": inode, "offset": offset}
                    ended = yield from self._read_following(path, handle, inode, offset, stop)
            except FileNotFoundError:  # between a rotation and the new file
                if not self.follow:
                    return
                stop.wait(self.poll)
                continue
            if not self.follow or ended == "stop":
                return
            offset = 0
            if ended == "rotated":
                inode = None

    def _read_following(
        self, path: Path, handle: IO[bytes], inode: int, offset: int, stop: threading.Event
    ) -> Generator[Line, None, str]:
        """Lines of an open file, then (following) more as they come, until it is rotated ('rotated'),
        truncated ('truncated'), `stop` is set ('stop') or, not following, its end ('end')."""
        while True:
            before = offset
            yield from self._read(handle, inode, offset, stop, last=False)
            offset = int(self._position["offset"])
            if stop.is_set():
                return "stop"
            if not self.follow:
                return "end"
            st = _stat(path)
            if st is None or st.st_ino != inode:
                # what was written to the old file before the writer moved on, then the new file
                yield from self._read(handle, inode, offset, stop, last=True)
                return "rotated"
            if st.st_size < offset:
                return "truncated"
            if offset == before:  # nothing new, or only part of a line: wait for the rest
                stop.wait(self.poll)

    def _read(
        self, handle: IO[bytes], inode: int, offset: int, stop: threading.Event, *, last: bool
    ) -> Iterator[Line]:
        """Complete lines from the handle's position to its end (`last`: the end of a file that will not
        grow, so a last line without newline counts too); the position follows every line."""
        buffer = b""
        while not stop.is_set():
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            *complete, buffer = (buffer + chunk).split(b"\n")
            for raw in complete:
                offset += len(raw) + 1
                self._position = {"source": self.source, "inode": inode, "offset": offset}
                line = self._parse(raw)
                if line is not None:
                    yield line
        else:
            return
        if buffer and last:
            offset += len(buffer)
            self._position = {"source": self.source, "inode": inode, "offset": offset}
            line = self._parse(buffer)
            if line is not None:
                yield line
        elif buffer:
            handle.seek(offset)  # the partial line is read whole later

    def _parse(self, raw: bytes) -> Line | None:
        now = self.clock()
        year = datetime.fromtimestamp(now, UTC).year
        text = raw.decode("utf-8", "replace")
        parsed = maillog.parse_file_line(text, year)
        if parsed is not None and parsed[0] > now + _DAY:
            parsed = maillog.parse_file_line(text, year - 1)  # 'Dec 31' read in January
        if parsed is None:
            return None
        if self._fresh and parsed[0] < self.since:
            return None
        return parsed


def _journal_line(raw: bytes) -> tuple[float, str, str, str] | None:
    """One `journalctl -o json` entry -> (time, identifier, message, cursor); None for a line that is not one."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    msg = entry.get("MESSAGE")
    if isinstance(msg, list):  # journald gives non-UTF-8 messages as byte arrays
        msg = bytes(b & 0xFF for b in msg if isinstance(b, int)).decode("utf-8", "replace")
    try:
        ts = int(entry.get("__REALTIME_TIMESTAMP", "0")) / 1e6
    except (TypeError, ValueError):
        ts = 0.0
    return ts, str(entry.get("SYSLOG_IDENTIFIER") or ""), str(msg or ""), str(entry.get("__CURSOR", ""))


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _find_inode(directory: Path, inode: int) -> Path | None:
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.inode() == inode:
                    return Path(entry.path)
    except OSError:
        return None
    return None
