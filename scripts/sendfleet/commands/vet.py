"""`sendfleet vet`: placeholder until its issue lands (replaced by the real command)."""

from __future__ import annotations

import argparse
from typing import Any

from sendfleet.errors import UsageError


def register(sub: Any) -> None:
    parser = sub.add_parser("vet", help="(not built yet)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise UsageError("'sendfleet vet' is not built yet")
