"""The package's layers, read from the source (ast: every import statement, at module level or inside a function,
without importing anything):

- `sendfleet.core` is pure: it imports no `sendfleet` module outside `core` except `sendfleet.errors`;
- production code never imports `sendfleet.lab` (the lab is a test fixture; the CLI, `sendfleet.commands`,
  `sendfleet.cli` and `sendfleet.__main__`, may choose it). Production code is every module but the CLI's and the
  lab's own: `dns`, `readiness`, `monitor`, `feedback` (which runs on the feedback host) and any package added
  later, without a list to keep up to date.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "scripts" / "sendfleet"
#: the modules that may import the lab: the CLI, and the lab itself
MAY_USE_LAB = ("sendfleet.commands", "sendfleet.cli", "sendfleet.__main__", "sendfleet.lab")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the file; `from a import b` yields `a.b` (b may be a module), relative
    imports are resolved against the file's package."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        for line, target in imported(path, root):
            where = f"{path.relative_to(root.parent)}:{line}: {name} imports {target}"
            pure_ok = any(within(target, allowed) for allowed in ("sendfleet.core", "sendfleet.errors"))
            if within(name, "sendfleet.core") and within(target, "sendfleet") and not pure_ok:
                found.append(f"{where} (core is pure: core and sendfleet.errors only)")
            production = not any(within(name, allowed) for allowed in MAY_USE_LAB)
            if production and within(target, "sendfleet.lab"):
                found.append(f"{where} (the lab is a test fixture)")
    return found


def test_the_package_keeps_its_layers() -> None:
    assert violations() == []


def test_the_lab_rule_covers_every_package_but_the_clis_and_the_labs() -> None:
    """Every package of sendfleet on disk is either allowed the lab by name or held to the rule, the feedback
    processor among the latter."""
    packages = {f"sendfleet.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert {"sendfleet.core", "sendfleet.dns", "sendfleet.feedback", "sendfleet.monitor",
            "sendfleet.readiness"} <= packages
    held = {p for p in packages if not any(within(p, allowed) for allowed in MAY_USE_LAB)}
    assert held == packages - {"sendfleet.commands", "sendfleet.lab"}


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("relative", "text", "flagged"),
    [
        ("core/a.py", "from sendfleet.dns import resolve\n", True),
        ("core/a.py", "def f():\n    import sendfleet.readiness.run\n", True),  # inside a function too
        ("core/a.py", "from sendfleet import lab\n", True),
        ("core/a.py", "from .. import cli\n", True),  # relative, resolved
        ("core/a.py", "from sendfleet.core.dkim import parse_tags\nfrom sendfleet.errors import UsageError\n", False),
        ("core/a.py", "from . import dkim\nimport publicsuffixlist\n", False),
        ("readiness/a.py", "def f():\n    from sendfleet.lab import sink\n", True),
        ("dns/a.py", "import sendfleet.lab.system\n", True),
        ("monitor/a.py", "from ..lab.sink import read_messages\n", True),
        ("readiness/a.py", "from sendfleet.core.readiness import judge\n", False),
        ("feedback/a.py", "def f():\n    from sendfleet.lab.sink import read_messages\n", True),
        ("feedback/__main__.py", "from ..lab import sinkpolicy\n", True),
        ("newpackage/a.py", "import sendfleet.lab\n", True),  # a package added later: held to it too
        ("atomicfile.py", "from sendfleet.lab import system\n", True),
        ("feedback/a.py", "from sendfleet.core import suppression\nfrom sendfleet.dns import mx\n", False),
        ("core/a.py", "from sendfleet.feedback import store\n", True),
        ("commands/a.py", "from sendfleet.lab.collect import LabSinkCollector\n", False),  # the CLI chooses
        ("cli.py", "from sendfleet.lab import lab\n", False),
        ("lab/a.py", "from sendfleet.readiness.collect import tag_of\n", False),
    ],
)
def test_the_rules_catch_what_they_say(tmp_path: Path, relative: str, text: str, flagged: bool) -> None:
    root = tmp_path / "sendfleet"
    write(root, "__init__.py", "")
    write(root, relative, text)
    assert bool(violations(root)) == flagged
