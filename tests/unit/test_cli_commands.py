"""The CLI imports only the module of the command it runs; `--help` still lists every command with the help
line that its module registers."""

from __future__ import annotations

import argparse
import subprocess
import sys

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
