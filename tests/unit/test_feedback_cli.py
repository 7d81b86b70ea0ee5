"""The controller's side of the feedback loop without hosts: `sendfleet suppression` and `sendfleet report
feedback|dmarc` reach the feedback host by SSH (subprocess.run faked here, the argv and stdin checked), the
import file is checked before anything is sent, rates are judged against Gmail's thresholds; the host's
configuration loader, import parsing, dead letters and MX classification."""

from __future__ import annotations

import io
import json
import shlex
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sendfleet.cli import main
from sendfleet.core import maillog, shaping
from sendfleet.dns import mx
from sendfleet.errors import UsageError
from sendfleet.feedback import config, processor, transfer

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def inventory(tmp: Path) -> Path:
    inv = tmp / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    senders:\n      hosts:\n        mta1:\n          ansible_host: 198.51.100.10\n"
        "    feedback:\n      hosts:\n        fb:\n          ansible_host: 198.51.100.21\n"
        "          ansible_user: admin\n          ansible_port: 2222\n")
    (inv / "group_vars" / "all" / "pools.yml").write_text(
        "pools: {transactional: {}}\n"
        "sender_domains: {shop.test: {pool: transactional, selectors: [s1]}}\n"
        "host_domain: lab.test\nadmin_networks: [198.51.100.0/28]\nsending_ips_require_vetted: false\n")
    (inv / "host_vars" / "mta1.yml").write_text(
        "sending_ips:\n  - {ip: 198.51.100.70, pool: transactional, ptr: o70.mta1.lab.test}\n")
    return inv


class FakeSsh:
    """subprocess.run of sendfleet.feedback.client: records argv and stdin, answers `reply`."""

    def __init__(self, reply: Any, code: int = 0, stderr: bytes = b"") -> None:
        self.reply = reply
        self.code = code
        self.stderr = stderr
        self.calls: list[tuple[list[str], bytes]] = []

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls.append((argv, kw.get("input") or b""))
        out = self.reply if isinstance(self.reply, bytes) else json.dumps(self.reply).encode()
        return subprocess.CompletedProcess(argv, self.code, out, self.stderr)

    def remote(self) -> list[str]:
        """The command run on the host (the last word of ssh's argv, split)."""
        return shlex.split(self.calls[-1][0][-1])


@pytest.fixture
def ssh(monkeypatch: pytest.MonkeyPatch) -> FakeSsh:
    fake = FakeSsh([])
    monkeypatch.setattr(subprocess, "run", fake)
    return fake


# ----------------------------------------------------------------------------------------- over SSH


def test_list_runs_the_module_on_the_first_feedback_host(tmp_path: Path, ssh: FakeSsh,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ssh.reply = [{"address": "a@gmail.test", "reason": "hard-bounce", "source": "dsn",
                  "created": "2026-12-01T00:00:00Z", "expires": None, "detail": "5.1.1"}]
    assert main(["suppression", "list", "-i", str(inventory(tmp_path)), "--format", "json"]) == 0
    argv = ssh.calls[0][0]
    assert argv[0] == "ssh" and "admin@198.51.100.21" in argv and argv[argv.index("-p") + 1] == "2222"
    assert ssh.remote() == ["sudo", "-n", "-u", "sendfleet", "--", "/opt/sendfleet/venv/bin/python", "-m",
                            "sendfleet.feedback", "suppression", "list", "--format", "json"]
    assert json.loads(capsys.readouterr().out) == ssh.reply


def test_root_switches_user_with_runuser(tmp_path: Path, ssh: FakeSsh) -> None:
    """root has no sudo rule to rely on (Debian's minimal hosts have no sudo): util-linux's runuser."""
    ssh.reply = []
    inv = inventory(tmp_path)
    hosts = inv / "hosts.yml"
    hosts.write_text(hosts.read_text().replace("ansible_user: admin", "ansible_user: root"))
    assert main(["suppression", "list", "-i", str(inv), "--format", "json"]) == 0
    assert ssh.remote()[:5] == ["runuser", "-u", "sendfleet", "--", "/opt/sendfleet/venv/bin/python"]


def test_the_remote_python_and_user_are_options(tmp_path: Path, ssh: FakeSsh) -> None:
    ssh.reply = {"address": "a@gmail.test", "reply": None}
    assert main(["suppression", "check", "a@gmail.test", "-i", str(inventory(tmp_path)), "--remote-python",
                 "/srv/sf/bin/python3", "--remote-user", ""]) == 0
    assert ssh.remote() == ["/srv/sf/bin/python3", "-m", "sendfleet.feedback", "suppression", "check", "--format",
                            "json", "a@gmail.test"]


def test_a_refusal_on_the_host_is_one_line_exit_2(tmp_path: Path, ssh: FakeSsh,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ssh.code, ssh.stderr = 2, b"python -m sendfleet.feedback: not a mail address: 'x'\n"
    assert main(["suppression", "add", "x", "-i", str(inventory(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sendfleet: fb: python -m sendfleet.feedback: not a mail address: 'x'"]


def test_an_unreachable_host_is_exit_3(tmp_path: Path, ssh: FakeSsh) -> None:
    ssh.code, ssh.stderr = 255, b"ssh: connect to host 198.51.100.21 port 2222: Connection refused\n"
    assert main(["suppression", "list", "-i", str(inventory(tmp_path))]) == 3


def test_import_sends_the_checked_entries_as_json_on_stdin(tmp_path: Path, ssh: FakeSsh,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "Old-ESP.csv"
    src.write_text("EMAIL_ADDRESS,Status,Date\nOne@Gmail.test,hard_bounce,2025-05-01\n")
    ssh.reply = {"imported": 1, "skipped": []}
    assert main(["suppression", "import", str(src), "-i", str(inventory(tmp_path)), "--replace"]) == 0
    assert ssh.remote()[-9:] == ["suppression", "import", "--input-format", "json", "--name", "Old-ESP.csv",
                                 "--format", "json", "--replace"]
    sent = json.loads(ssh.calls[0][1])
    assert sent == [{"address": "one@gmail.test", "reason": "hard-bounce", "source": "import:Old-ESP.csv",
                     "created": "2025-05-01T00:00:00Z", "expires": None, "detail": ""}]
    assert capsys.readouterr().out == "1 entries imported\n"


def test_a_bad_row_stops_the_import_before_anything_is_sent(tmp_path: Path, ssh: FakeSsh,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "list.csv"
    src.write_text("recipient,type\nok@gmail.test,spam\nnope,bounce\nalso@gmail.test\n")
    inv = str(inventory(tmp_path))
    assert main(["suppression", "import", str(src), "-i", inv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"sendfleet: {src}: row 2: not a mail address: 'nope'" in err
    assert f"sendfleet: {src}: row 3: 1 fields, the header has 2" in err
    assert err[-1] == f"sendfleet: {src}: 2 bad row(s), nothing imported (--skip-bad imports the others)"
    assert ssh.calls == []
    ssh.reply = {"imported": 1, "skipped": []}
    assert main(["suppression", "import", str(src), "-i", inv, "--skip-bad"]) == 0
    assert [e["address"] for e in json.loads(ssh.calls[0][1])] == ["ok@gmail.test"]


def test_export_writes_the_file_atomically(tmp_path: Path, ssh: FakeSsh) -> None:
    ssh.reply = b'[{"address": "a@gmail.test"}]\n'
    out = tmp_path / "list.json"
    assert main(["suppression", "export", "-i", str(inventory(tmp_path)), "--output", str(out)]) == 0
    assert ssh.remote()[-3:] == ["export", "--output-format", "json"]  # by the file's extension
    assert out.read_bytes() == ssh.reply
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------------------------- reports


def _senders(tmp_path: Path, sent: int, bounced: int) -> Path:
    now = datetime.now(UTC).timestamp()
    hour = maillog.hour_key(now)
    data = tmp_path / "data" / "mta1"
    data.mkdir(parents=True)
    (data / "delivery.json").write_text(json.dumps({
        "hours": {hour: [{"ip": "198.51.100.70", "provider": "gmail", "status": "sent", "count": sent},
                         {"ip": "198.51.100.70", "provider": "gmail", "status": "bounced", "count": bounced}]},
        "by_sender_domain": {hour: {"shop.test": {"sent": sent, "deferred": 0, "bounced": bounced}}}}))
    (data / "state.json").write_text("{}")
    return tmp_path / "data"


@pytest.mark.parametrize(("complaints", "status", "code"), [(0, "ok", 0), (1, "warn", 0), (2, "warn", 0),
                                                            (3, "critical", 1)])
def test_report_feedback_judges_the_complaint_rate(tmp_path: Path, ssh: FakeSsh, capsys: pytest.CaptureFixture[str],
                                                   complaints: int, status: str, code: int) -> None:
    ssh.reply = {"days": 7, "since": "x", "sender_domains": ["shop.test"], "fleet_ips": ["198.51.100.70"],
                 "rows": [{"sender_domain": "shop.test", "ip": "198.51.100.70", "provider": "gmail", "hard": 4,
                           "soft": 1, "delayed": 2, "block": 5, "complaints": complaints}]}
    argv = ["report", "feedback", "-i", str(inventory(tmp_path)), "--from-dir", str(_senders(tmp_path, 1000, 10)),
            "--days", "2", "--format", "json"]
    assert main(argv) == code
    assert ssh.remote()[-6:] == ["report", "feedback", "--days", "2", "--format", "json"]
    report = json.loads(capsys.readouterr().out)
    for dim in ("by_sender_domain", "by_ip", "by_provider"):
        (row,) = report[dim]
        assert (row["sent"], row["hard"], row["soft"], row["block"], row["complaints"]) == (1000, 4, 1, 5, complaints)
        assert row["complaint_rate"] == complaints / 1000
        assert row["bounce_rate"] == 10 / 1010
        assert row["status"] == status


def test_report_without_what_is_still_the_deliveries(tmp_path: Path, ssh: FakeSsh,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", "-i", str(inventory(tmp_path)), "--from-dir", str(_senders(tmp_path, 5, 0)), "--format", "json"]
    assert main(argv) == 0
    assert ssh.calls == []  # the feedback host is not asked
    assert {(r["ip"], r["sent"]) for r in json.loads(capsys.readouterr().out)["rows"]} == {("198.51.100.70", 5)}


def test_report_dmarc_flags_fleet_sources_failing(tmp_path: Path, ssh: FakeSsh,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    row = {"domain": "shop.test", "source_ip": "198.51.100.70", "messages": 10, "reports": 1, "dkim_pass": 9,
           "spf_pass": 10, "dmarc_pass": 10, "quarantined": 0, "rejected": 0, "reporters": "google.test",
           "in_fleet": True}
    stranger = {**row, "source_ip": "192.0.2.9", "dmarc_pass": 0, "in_fleet": False}
    ssh.reply = {"days": 7, "since": "x", "fleet_ips": ["198.51.100.70"], "rows": [row, stranger]}
    inv = str(inventory(tmp_path))
    assert main(["report", "dmarc", "-i", inv]) == 0  # a stranger failing is not our mail
    assert "NOT IN FLEET" in capsys.readouterr().out
    ssh.reply["rows"] = [{**row, "dmarc_pass": 7}]
    assert main(["report", "dmarc", "-i", inv, "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["fleet_sources_failing"] == 1


# ------------------------------------------------------------------------------------------- host pieces


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feedback.yml"
    path.write_text("database: dbname=sendfleet\ndead_letter_dir: /var/lib/sendfleet/feedback/dead-letter\n" + text)
    return path


@pytest.mark.parametrize(("text", "named"), [
    ("policy: {soft_bounces: many}\n", "policy.soft_bounces"),
    ("policy: {soft_windows: 3}\n", "policy.soft_windows"),
    ("limits: {max_ratio: 0}\n", "limits.max_ratio"),
    ("fleet_ips: [198.51.100.70, nope]\n", "fleet_ips[1]"),
    ("provider_classes: {gmail: {limits: {connections: -1}}}\n", "provider_classes.gmail.limits.connections"),
    ("textfile_dir: relative/dir\n", "textfile_dir"),
    ("colour: blue\n", "colour"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = _config(tmp_path, text)
    with pytest.raises(UsageError) as err:
        config.load(path)
    assert str(err.value).startswith(f"{path}: ") and named in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_config_defaults_and_classes(tmp_path: Path) -> None:
    cfg = config.load(_config(tmp_path, "bounce_domains: {Bounces.Shop.test: shop.test}\n"
                                        "provider_classes: {gmail: {limits: {connections: 2}}}\n"))
    assert cfg.bounce_domains == {"bounces.shop.test": "shop.test"} and cfg.sender_domains == {"shop.test"}
    assert cfg.classes["gmail"].limits.connections == 2 and "yahoo" in cfg.classes  # over the shipped classes
    assert cfg.policy.soft_bounces == 3 and cfg.policy.soft_expiry_days == 30 and cfg.textfile_dir is None


def test_csv_columns_are_found_case_insensitively() -> None:
    entries, bad = transfer.parse_csv("Recipient ,STATUS,created_at\n<X@Example.TEST>,complaint,1746000000\n",
                                      source="import:f", now=NOW)
    assert bad == []
    (e,) = entries
    assert (e.address, e.reason, e.created) == ("x@example.test", "complaint", datetime.fromtimestamp(1746000000, UTC))
    with pytest.raises(UsageError, match="no address column"):
        transfer.parse_csv("name,reason\nx,y\n", source="import:f", now=NOW)


def test_json_import_refuses_unknown_keys_and_reasons() -> None:
    text = json.dumps([{"address": "a@b.test", "colour": 1}, {"address": "c@b.test", "reason": "whim"},
                       {"address": "d@b.test", "reason": "manual", "expires": "2020-01-01"}, {"address": "e@b.test"}])
    entries, bad = transfer.parse_json(text, source="import:f", now=NOW)
    assert [e.address for e in entries] == ["e@b.test"]
    assert bad[0].startswith("row 1: unknown key 'colour'") and bad[1].startswith("row 2: unknown reason 'whim'")
    assert bad[2].startswith("row 3: expires")


def test_a_dead_letter_is_the_whole_message_and_a_sidecar(tmp_path: Path) -> None:
    rest = io.BytesIO(b"-tail" * 50_000)
    path = processor.write_dead_letter(tmp_path / "dl", b"head", rest, error="DSN: no Status", recipient="r@b.test",
                                       sender="s@x.test", now=NOW)
    assert path.read_bytes() == b"head" + b"-tail" * 50_000
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta == {"error": "DSN: no Status", "recipient": "r@b.test", "sender": "s@x.test",
                    "time": "2026-12-02T12:00:00Z", "bytes": 4 + 250_000, "message": path.name}
    assert sorted(p.suffix for p in (tmp_path / "dl").iterdir()) == [".eml", ".json"]


def test_the_mx_class_is_looked_up_once_per_domain_and_other_on_failure() -> None:
    classes = shaping.parse_classes(shaping.default_data())
    asked: list[str] = []

    def lookup(domain: str) -> mx.MxAnswer:
        asked.append(domain)
        if domain == "broken.test":
            return mx.MxAnswer(mx.FAILED, detail="timeout")
        return mx.MxAnswer(mx.OK, ("alt1.gmail-smtp-in.l.google.com",))

    of = processor.MxClassifier(classes, lookup=lookup)
    assert [of("a@corp.test"), of("b@CORP.test"), of("c@broken.test")] == ["gmail", "gmail", "other"]
    assert asked == ["corp.test", "broken.test"]
