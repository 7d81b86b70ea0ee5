"""Where the tagged messages are collected: a seed mailbox over IMAP, or a directory of raw messages (the
mailbox synchronised by the operator's own tool: Maildir, or one .eml file per message). The lab's sink has
its collector in the lab (`sendfleet.lab.collect`); the CLI chooses.

Every collector finds messages by the `X-Sendfleet-Readiness` header that readiness puts in each one, and
returns what the receiving MX saw: client IP, HELO and TLS (for a real mailbox they come from the Received
header the provider's MX added for the hop from one of the fleet's IPs).
"""

from __future__ import annotations

import contextlib
import email
import email.parser
import email.policy
import imaplib
import os
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from sendfleet.core.readiness import TAG_HEADER, hop_from_fleet
from sendfleet.errors import CannotCheckError, UsageError
from sendfleet.readiness.evidence import Collected

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def tag_of(raw: bytes) -> str | None:
    value = _HEADERS.parsebytes(raw).get(TAG_HEADER)
    return None if value is None else " ".join(str(value).split())


def from_raw(raw: bytes, fleet_ips: set[str]) -> Collected | None:
    """A tagged message as stored in a mailbox: the hop from the fleet is the Received header whose client IP
    is one of `fleet_ips` (written by the receiving MX); the envelope sender is Return-Path."""
    headers = _HEADERS.parsebytes(raw)
    value = headers.get(TAG_HEADER)
    if value is None:
        return None
    hop = hop_from_fleet([str(v) for v in headers.get_all("Received") or []], fleet_ips)
    return_path = str(headers.get("Return-Path", "")).strip().strip("<>")
    return Collected(
        tag=" ".join(str(value).split()),
        client_ip=hop.ip if hop else "",
        helo=hop.helo if hop else "",
        tls_protocol=hop.tls_protocol if hop else None,
        mail_from=return_path,
        raw=raw,
    )


class Collector(Protocol):
    description: str

    def collect(self, tags: set[str]) -> dict[str, Collected]:
        """The messages among `tags` that have arrived so far (tag -> message)."""
        ...


class DirectoryCollector:
    """Raw messages under a directory (Maildir `cur/` and `new/`, or `*.eml` files, searched recursively).

    The hop from the fleet is read from the Received header whose client IP is one of `fleet_ips`; the
    envelope sender from Return-Path.
    """

    def __init__(self, path: Path, fleet_ips: Iterable[str]) -> None:
        if not path.is_dir():
            raise UsageError(f"--collect-from {path}: no such directory")
        self.path = path
        self.description = f"messages under {path}"
        self.fleet_ips = set(fleet_ips)
        self._parsed: dict[Path, tuple[float, Collected | None]] = {}

    def _read(self, file: Path) -> Collected | None:
        return from_raw(file.read_bytes(), self.fleet_ips)

    def collect(self, tags: set[str]) -> dict[str, Collected]:
        found: dict[str, Collected] = {}
        for file in sorted(self.path.rglob("*")):
            if not file.is_file() or file.name.startswith("."):
                continue
            try:
                mtime = file.stat().st_mtime
                cached = self._parsed.get(file)
                if cached is None or cached[0] != mtime:
                    cached = (mtime, self._read(file))
                    self._parsed[file] = cached
            except OSError:
                continue
            msg = cached[1]
            if msg is not None and msg.tag in tags:
                found[msg.tag] = msg
        return found


IMAP_PASSWORD_ENV = "SENDFLEET_IMAP_PASSWORD"


def common_prefix(items: Iterable[str]) -> str:
    """The longest common prefix (tags of one run share `sfr<run>x`: one IMAP search finds them all)."""
    words = sorted(items)
    if not words:
        return ""
    first, last = words[0], words[-1]
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


class ImapCollector:
    """A seed mailbox over IMAP: `imaps://USER@HOST[:PORT]/FOLDER` (or `imap://` with STARTTLS), the password
    from the environment (SENDFLEET_IMAP_PASSWORD). Messages are found by the readiness header and only
    read, never deleted or flagged (BODY.PEEK)."""

    def __init__(self, url: str, fleet_ips: Iterable[str], *, connect: Callable[..., Any] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
            raise UsageError(f"--imap {url}: expected imaps://USER@HOST[:PORT]/FOLDER")
        self.password = os.environ.get(IMAP_PASSWORD_ENV)
        if not self.password:
            raise UsageError(f"--imap: set the mailbox password in the environment variable {IMAP_PASSWORD_ENV}")
        self.host = parts.hostname
        self.port = parts.port or (993 if parts.scheme == "imaps" else 143)
        self.secure = parts.scheme == "imaps"
        self.user = unquote(parts.username)
        self.folder = unquote(parts.path.lstrip("/")) or "INBOX"
        self.description = f"IMAP {self.user}@{self.host}/{self.folder}"
        self.fleet_ips = set(fleet_ips)
        self._connect = connect
        self._found: dict[str, Collected] = {}
        self._seen_uids: set[bytes] = set()

    def _open(self) -> Any:
        if self._connect is not None:
            return self._connect(self.host, self.port)
        if self.secure:
            return imaplib.IMAP4_SSL(self.host, self.port, ssl_context=ssl.create_default_context())
        conn = imaplib.IMAP4(self.host, self.port)
        conn.starttls(ssl_context=ssl.create_default_context())
        return conn

    def collect(self, tags: set[str]) -> dict[str, Collected]:
        wanted = tags - set(self._found)
        if wanted:
            prefix = common_prefix(wanted) or min(wanted)
            try:
                conn = self._open()
                try:
                    conn.login(self.user, self.password)
                    conn.select(self.folder, readonly=True)
                    _, data = conn.uid("SEARCH", None, "HEADER", TAG_HEADER, prefix)
                    for uid in (data[0] or b"").split():
                        if uid in self._seen_uids:
                            continue
                        _, parts = conn.uid("FETCH", uid, "(BODY.PEEK[])")
                        raw = next((p[1] for p in parts if isinstance(p, tuple)), None)
                        if raw is None:
                            continue
                        self._seen_uids.add(uid)
                        msg = from_raw(raw, self.fleet_ips)
                        if msg is not None:
                            self._found[msg.tag] = msg
                finally:
                    with contextlib.suppress(Exception):
                        conn.logout()
            except (OSError, imaplib.IMAP4.error) as err:
                raise CannotCheckError(f"{self.description}: {err}") from None
        return {t: c for t, c in self._found.items() if t in tags}
