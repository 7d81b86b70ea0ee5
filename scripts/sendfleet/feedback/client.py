"""The controller's way to the feedback host: run `python -m sendfleet.feedback VERB --format json ...` on the
first host of the inventory group `feedback` over SSH (`sendfleet.monitor.remote.ssh_argv`), as the database's
owner (`runuser` as root, else `sudo -n -u sendfleet`; peer authentication), or in this process with `--local` (a
given configuration file and conninfo: tests, or a controller that is the feedback host)."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sendfleet.errors import CannotCheckError, UsageError

if TYPE_CHECKING:
    from sendfleet.core.inventory import Inventory

REMOTE_PYTHON = "/opt/sendfleet/venv/bin/python"
REMOTE_USER = "sendfleet"


def add_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("feedback host")
    g.add_argument("--feedback-group", default="feedback",
                   help="inventory group of the feedback host; its first host is asked (default feedback)")
    g.add_argument("--remote-python", default=REMOTE_PYTHON,
                   help=f"python of the sendfleet venv on the feedback host (default {REMOTE_PYTHON})")
    g.add_argument("--remote-user", default=REMOTE_USER,
                   help=f"run it as this user: `runuser -u` when the SSH user is root, else `sudo -n -u` ('' for "
                        f"the SSH user itself; default {REMOTE_USER})")
    g.add_argument("--local", action="store_true",
                   help="run it in this process against --database and --feedback-config instead of over SSH")
    g.add_argument("--feedback-config", type=Path, help="with --local: the feedback configuration file")
    g.add_argument("--database", help="with --local: libpq conninfo (default: the configuration's)")


def _local_prefix(args: argparse.Namespace) -> list[str]:
    if args.feedback_config is None:
        raise UsageError("--local needs --feedback-config FILE")
    words = ["--config", str(args.feedback_config)]
    if args.database:
        words += ["--database", args.database]
    return words


def run(args: argparse.Namespace, inv: Inventory | None, words: Sequence[str], *, stdin: bytes = b"",
        parse_json: bool = True, timeout: float = 300) -> Any:
    """The output of `python -m sendfleet.feedback WORDS` (parsed JSON unless parse_json is False)."""
    if args.local:
        from sendfleet.feedback.__main__ import run_captured

        code, out, err = run_captured([*_local_prefix(args), *words], stdin)
        where = "feedback (local)"
    else:
        from sendfleet.monitor import remote

        if inv is None:
            raise UsageError("an inventory is needed to find the feedback host (or --local)")
        hosts = inv.group(args.feedback_group)
        if not hosts:
            raise UsageError(f"{inv.path}: no host in group {args.feedback_group!r}")
        host = hosts[0]
        command = [args.remote_python, "-m", "sendfleet.feedback", *words]
        if args.remote_user:
            # root (the lab, many fleets) switches user with util-linux's runuser; anyone else needs sudo's rule
            ssh_user = host.vars.get("ansible_user") or host.vars.get("ansible_ssh_user")
            switch = ["runuser", "-u"] if ssh_user == "root" else ["sudo", "-n", "-u"]
            command = [*switch, args.remote_user, "--", *command]
        argv = remote.ssh_argv(host.name, host.vars, shlex.join(command))
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CannotCheckError(f"{host.name}: cannot reach it by SSH: {e}") from None
        code, out, err = proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        where = host.name
    if code == 2:
        lines = [line for line in err.strip().splitlines() if line]
        raise UsageError(f"{where}: " + ("; ".join(lines[-20:]) or "refused"))
    if code not in (0, 1):
        raise CannotCheckError(f"{where}: exit {code}: {err.strip()[:500]}")
    if not parse_json:
        return out
    try:
        return json.loads(out)
    except ValueError:
        raise CannotCheckError(f"{where}: not JSON: {out[:200]!r}") from None
