"""Read the monitor's files from the senders over SSH, with the inventory's connection variables
(ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file, ansible_ssh_common_args)."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Mapping
from typing import Any

from sendfleet.errors import CannotCheckError


def ssh_argv(name: str, hostvars: Mapping[str, Any], *remote: str) -> list[str]:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    key = hostvars.get("ansible_ssh_private_key_file") or hostvars.get("ansible_private_key_file")
    if key:
        argv += ["-i", str(key)]
    port = hostvars.get("ansible_port") or hostvars.get("ansible_ssh_port")
    if port:
        argv += ["-p", str(port)]
    argv += shlex.split(str(hostvars.get("ansible_ssh_common_args") or ""))
    user = hostvars.get("ansible_user") or hostvars.get("ansible_ssh_user")
    address = str(hostvars.get("ansible_host") or name)
    argv.append(f"{user}@{address}" if user else address)
    argv += list(remote)
    return argv


def read_json(name: str, hostvars: Mapping[str, Any], path: str, timeout: float = 60) -> Any:
    """The JSON file `path` on host `name` (None when it does not exist there)."""
    quoted = shlex.quote(path)
    argv = ssh_argv(name, hostvars, f"if [ -e {quoted} ]; then cat {quoted}; else echo null; fi")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CannotCheckError(f"{name}: cannot reach it by SSH: {err}") from None
    if proc.returncode != 0:
        raise CannotCheckError(f"{name}: ssh failed ({proc.returncode}): {proc.stderr.strip()[:200]}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise CannotCheckError(f"{name}: {path} is not JSON") from None
