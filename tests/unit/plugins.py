"""Load one of the repository's Ansible plugins (plugins/<kind>/<name>.py) as a module, for unit tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def load_plugin(kind: str, name: str) -> ModuleType:
    """plugins/<kind>/<name>.py as module `<name>` (registered in sys.modules, as dataclasses and pickling need)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "plugins" / kind / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
