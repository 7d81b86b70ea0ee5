"""Readiness adapters without the network: composing a tagged message, reading a Maildir/.eml directory."""

from __future__ import annotations

import email
from pathlib import Path

import pytest

from sendfleet.core.readiness import TAG_HEADER
from sendfleet.errors import UsageError
from sendfleet.readiness.collect import DirectoryCollector, tag_of
from sendfleet.readiness.submit import compose


def test_compose_tags_the_message() -> None:
    out = compose("sfrabcx0001", "mta1", "shop.test", "readiness", "readiness+sfrabcx0001@gmail.test")
    msg = email.message_from_bytes(out.data)
    assert msg[TAG_HEADER] == "sfrabcx0001"
    assert msg["From"].endswith("<readiness@shop.test>")
    assert out.mail_from == "readiness@shop.test" and out.rcpt == "readiness+sfrabcx0001@gmail.test"
    assert b"\r\n" in out.data
    assert tag_of(out.data) == "sfrabcx0001"


def _stored(tag: str, ip: str, helo: str) -> bytes:
    return (
        "Return-Path: <readiness@shop.test>\n"
        "Received: from mx-internal (mx-internal [10.1.2.3]) by store.example with LMTP id 9\n"
        f"Received: from {helo} ({helo} [{ip}])\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\n"
        "\tby mx.example (Postfix) with ESMTPS id 1\n\tfor <seed@example.com>; Fri, 27 Nov 2026 20:00:00 +0000\n"
        f"From: readiness@shop.test\n{TAG_HEADER}: {tag}\nSubject: x\n\nbody\n"
    ).encode()


def test_directory_collector_reads_maildir_and_eml(tmp_path: Path) -> None:
    (tmp_path / "cur").mkdir()
    (tmp_path / "cur" / "1.host:2,S").write_bytes(_stored("t1", "198.51.100.64", "o64.mta1.lab.test"))
    (tmp_path / "t2.eml").write_bytes(_stored("t2", "198.51.100.65", "o65.mta1.lab.test"))
    (tmp_path / "other.eml").write_bytes(b"From: x@y\nSubject: not ours\n\nhi\n")
    collector = DirectoryCollector(tmp_path, ["198.51.100.64", "198.51.100.65"])
    found = collector.collect({"t1", "t2", "t3"})
    assert set(found) == {"t1", "t2"}
    assert (found["t1"].client_ip, found["t1"].helo, found["t1"].tls_protocol) == (
        "198.51.100.64", "o64.mta1.lab.test", "TLSv1.3")
    assert found["t2"].mail_from == "readiness@shop.test"


def test_directory_collector_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        DirectoryCollector(tmp_path / "missing", [])


class FakeImap:
    """Enough of imaplib.IMAP4 for the collector: one folder, SEARCH HEADER substring, FETCH BODY.PEEK[]."""

    def __init__(self, messages: dict[bytes, bytes]) -> None:
        self.messages = messages
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, host: str, port: int) -> FakeImap:
        self.calls.append(("connect", host, str(port)))
        return self

    def login(self, user: str, password: str) -> None:
        self.calls.append(("login", user))

    def select(self, folder: str, readonly: bool = False) -> None:
        assert readonly
        self.calls.append(("select", folder))

    def uid(self, command: str, *args: object) -> tuple[str, list[object]]:
        if command == "SEARCH":
            header, value = str(args[2]), str(args[3])
            hits = [u for u, raw in self.messages.items() if f"{header}: {value}".encode() in raw]
            return "OK", [b" ".join(hits)]
        uid = args[0]
        assert isinstance(uid, bytes) and args[1] == "(BODY.PEEK[])"
        return "OK", [(b"1 (UID " + uid + b" BODY[] {n}", self.messages[uid]), b")"]

    def logout(self) -> None:
        self.calls.append(("logout",))


def test_imap_collector_finds_the_run_by_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    from sendfleet.readiness.collect import ImapCollector

    monkeypatch.setenv("SENDFLEET_IMAP_PASSWORD", "secret")
    server = FakeImap({
        b"7": _stored("sfrabcx0001", "198.51.100.64", "o64.mta1.lab.test"),
        b"8": _stored("sfrabcx0002", "198.51.100.65", "o65.mta1.lab.test"),
        b"9": _stored("sfrzzzx0001", "198.51.100.65", "o65.mta1.lab.test"),
    })
    collector = ImapCollector("imaps://seed%40example.com@imap.example.com/Junk", ["198.51.100.64",
                              "198.51.100.65"], connect=server)
    found = collector.collect({"sfrabcx0001", "sfrabcx0002"})
    assert set(found) == {"sfrabcx0001", "sfrabcx0002"}
    assert found["sfrabcx0002"].client_ip == "198.51.100.65"
    assert ("login", "seed@example.com") in server.calls and ("select", "Junk") in server.calls
    assert ("connect", "imap.example.com", "993") in server.calls


def test_imap_collector_needs_a_password_and_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from sendfleet.readiness.collect import ImapCollector

    monkeypatch.delenv("SENDFLEET_IMAP_PASSWORD", raising=False)
    with pytest.raises(UsageError, match="SENDFLEET_IMAP_PASSWORD"):
        ImapCollector("imaps://seed@imap.example.com/INBOX", [])
    monkeypatch.setenv("SENDFLEET_IMAP_PASSWORD", "x")
    with pytest.raises(UsageError, match="expected imaps://"):
        ImapCollector("https://imap.example.com/", [])
