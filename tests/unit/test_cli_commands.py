"""The CLI imports only the module of the command it runs; `--help` still lists every command with the help
line that its module registers."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sendfleet.cli import COMMANDS, build_parser


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_the_help_table_is_what_each_module_registers() -> None:
    sub = _subcommands(build_parser())
    registered = {choice.dest: choice.help for choice in sub._choices_actions}
    assert registered == COMMANDS
    assert list(registered) == list(COMMANDS)  # and in the order --help lists them


def test_one_command_imports_its_module_alone() -> None:
    code = (
        "import sys\n"
        "from sendfleet.cli import build_parser\n"
        "build_parser(only='warmup')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('sendfleet.commands.'))\n"
        "print(' '.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "sendfleet.commands.warmup" in out
    assert "sendfleet.commands.vet" not in out and "sendfleet.commands.lab" not in out


def test_help_lists_every_command_without_importing_them() -> None:
    code = (
        "import sys\n"
        "from sendfleet.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', ' '.join(m for m in sys.modules if m.startswith('sendfleet.commands.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name, help_line in COMMANDS.items():
        assert name in out
        assert help_line.split(";")[0][:30] in " ".join(out.split())
    assert out.rstrip().splitlines()[-1].strip() == "MODULES"


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(" ".join(path), parser)]
    return [leaf for name, child in subs[0].choices.items() for leaf in _leaves(child, (*path, name))]


#: commands that act rather than report: they print progress or open a shell, no result to format
ACTIONS = {"lab up", "lab down", "lab ssh", "lab blocklist"}


def test_every_command_has_a_description_an_example_and_json() -> None:
    leaves = _leaves(build_parser())
    assert len(leaves) >= 17
    for name, parser in leaves:
        assert parser.description, f"sendfleet {name}: no description"
        assert parser.epilog and f"example: sendfleet {name}" in parser.epilog, f"sendfleet {name}: no example"
        if name not in ACTIONS:
            formats = [a.choices for a in parser._actions if "--format" in a.option_strings]
            assert formats and "json" in (formats[0] or ()), f"sendfleet {name}: no --format json"


def test_vet_reads_targets_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    from sendfleet.commands import vet

    monkeypatch.setattr(sys, "stdin", io.StringIO("198.51.100.8/30  # four\nshop.test\n"))
    args = argparse.Namespace(targets=["198.51.100.1", "-"], from_file=None, max_addresses=65536)
    targets = vet._targets(args)
    assert targets.address_count == 5 and targets.domains == ("shop.test",)


def test_pool_assign_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sendfleet.cli import main

    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text("all:\n  vars: {host_domain: lab.test}\n  children:\n    senders:\n"
                                   "      hosts: {mta1: {}}\n")
    (inv / "group_vars" / "all" / "pools.yml").write_text(
        "pools: {transactional: {}}\nsender_domains: {shop.test: {pool: transactional, selectors: [s1]}}\n"
        "admin_networks: [198.51.100.0/28]\nvetted_ips: {transactional: [{ip: 198.51.100.70}, {ip: 198.51.100.71}]}\n")
    assert main(["pool", "assign", "-i", str(inv), "--per-host", "2", "--dry-run", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dry_run"] is True
    assert [(a["host"], a["ip"], a["pool"], a["ptr"]) for a in data["assigned"]] == [
        ("mta1", "198.51.100.70", "transactional", "o70.mta1.lab.test"),
        ("mta1", "198.51.100.71", "transactional", "o71.mta1.lab.test")]
    assert not (inv / "host_vars").exists()  # --dry-run wrote nothing
