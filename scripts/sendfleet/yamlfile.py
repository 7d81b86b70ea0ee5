"""YAML files that people also edit: read keeping comments, write atomically.

Every file the CLI writes goes through `write_atomic`: a temp file in the same folder, fsync,
then rename, so a reader sees the old file or the new one and never half of one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from sendfleet import atomicfile
from sendfleet.errors import UsageError


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def load(path: Path, *, missing_ok: bool = False) -> Any:
    """Load a YAML file round-trip (comments kept). A malformed file is a UsageError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UsageError(f"{path}: no such file") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return _yaml().load(text)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{path}:{where}: malformed YAML: {problem}") from None


def load_text(text: str) -> Any:
    """Parse YAML text round-trip (for building new documents that keep their style)."""
    return _yaml().load(text)


def dumps(data: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return buf.getvalue()


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write text to path atomically (temp file in the same folder + fsync + rename)."""
    atomicfile.write_atomic(path, text, mode=mode)


def dump_atomic(path: Path, data: Any, *, mode: int = 0o644) -> None:
    write_atomic(path, dumps(data), mode=mode)
