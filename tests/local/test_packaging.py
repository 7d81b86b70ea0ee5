"""The sendfleet package as others install it: `pip install .` (not editable) from a copy of the repository into a
fresh venv of each Python that pyproject.toml allows (3.11-3.13, what ansible-core 2.19 supports), then every
module of the installed package imports with only what the package declares; every third-party import of the
sources is a declared requirement; and the execution environment (execution-environment.yml, ansible-builder v3)
writes its build context with the package's wheel in it.

Needs PyPI or the machine's pip configuration (pip's cache keeps re-runs fast) and python3.11; python3.12 and
python3.13 are tested when the machine has them (pyenv's are found too).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "scripts/sendfleet"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]

#: run inside the venv: import every module of the installed package; print what failed
IMPORT_ALL = """
import importlib, json, pkgutil, sys, sendfleet
failed, names = {}, []
for info in pkgutil.walk_packages(sendfleet.__path__, "sendfleet.", onerror=lambda name: failed.update({name: "walk"})):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue  # entry points (python -m ...): run by the test instead
    names.append(info.name)
    try:
        importlib.import_module(info.name)
    except BaseException as err:
        failed[info.name] = f"{type(err).__name__}: {err}"
# imported lazily by a dependency, so no module import above reaches them: dkimpy verifies Ed25519 with PyNaCl
for name in ("nacl.signing",):
    try:
        importlib.import_module(name)
    except BaseException as err:
        failed[name] = f"{type(err).__name__}: {err}"
print(json.dumps({"file": sendfleet.__file__, "modules": names, "failed": failed}))
"""


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _interpreter(version: str) -> str | None:
    """python<version> on PATH (not a venv's), else pyenv's."""
    pyenv = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    for candidate in (shutil.which(f"python{version}"), *pyenv):
        if candidate is None:
            continue
        proc = subprocess.run([str(candidate), "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip() == version:
            return str(candidate)
    return None


def run(argv: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYENV_VERSION"}}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the build reads, copied out of the repository (no egg-info, no caches): the wheel is built from it."""
    copy = tmp_path_factory.mktemp("src")
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    shutil.copytree(PACKAGE, copy / "scripts/sendfleet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return copy


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_every_module_imports_from_the_installed_wheel(version: str, source: Path,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    python = _interpreter(version)
    if python is None:
        assert version != "3.11", "python3.11 is missing: the supported floor must be tested"
        pytest.skip(f"python{version} is not on this machine")
    work = tmp_path_factory.mktemp(f"py{version}")
    venv = work / "venv"
    assert run([python, "-m", "venv", str(venv)], cwd=work).returncode == 0
    py = str(venv / "bin/python")
    install = run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)], cwd=work)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    check = run([py, "-m", "pip", "check"], cwd=work)
    assert check.returncode == 0, check.stdout + check.stderr

    proc = run([py, "-c", IMPORT_ALL], cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert Path(result["file"]).is_relative_to(venv), f"imported {result['file']}, not the installed wheel"
    assert result["failed"] == {}
    expected = {".".join(("sendfleet", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
                for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}
    assert set(result["modules"]) == expected - {"sendfleet"}
    # the package data the roles and `sendfleet vet --zones lab|public` read, and the two entry points
    listing = "from sendfleet.commands.vet import ZONES_DIR; print(sorted(p.name for p in ZONES_DIR.iterdir()))"
    zones = run([py, "-c", listing], cwd=work)
    assert zones.stdout.strip() == "['lab.yml', 'public.yml']", zones.stderr
    for argv in ([str(venv / "bin/sendfleet"), "--help"], [py, "-m", "sendfleet.monitor", "--help"]):
        ran = run(argv, cwd=work)
        assert ran.returncode == 0 and "usage" in ran.stdout.lower(), ran.stderr


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level names of the package's imports outside the standard library -> the files importing them."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"sendfleet", "__future__"}:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_third_party_import_is_a_declared_requirement() -> None:
    """Not merely importable because another requirement happens to pull it in: each import's distribution is in
    [project] dependencies itself."""
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    distributions = packages_distributions()
    imports = _third_party_imports()
    assert {"yaml", "cryptography", "dns", "ansible"} <= set(imports)
    undeclared = {}
    for top, files in sorted(imports.items()):
        dists = {_name(d) for d in distributions.get(top, [])}
        assert dists, f"{top} (imported by {sorted(files)}) is not installed here"
        if not dists & declared:
            undeclared[top] = (sorted(dists), sorted(files))
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def test_python_range_matches_ansible_core() -> None:
    assert PYPROJECT["project"]["requires-python"] == ">=3.11,<3.14"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.11"


def test_execution_environment_build_context(source: Path, tmp_path: Path) -> None:
    """`ansible-builder create` (no container engine here: the build context only) with the wheel built by
    `pip wheel --no-deps -w dist .`, as docs/awx.md says."""
    ee = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    project = PYPROJECT["project"]
    pins = {_name(r): r for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    assert ee["dependencies"]["ansible_core"]["package_pip"] == pins["ansible-core"]
    assert ee["dependencies"]["ansible_runner"]["package_pip"] == pins["ansible-runner"]

    shutil.copy(REPO / "execution-environment.yml", tmp_path / "execution-environment.yml")
    shutil.copy(REPO / "bindep.txt", tmp_path / "bindep.txt")
    wheel = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                 "-w", str(tmp_path / "dist"), str(source)], cwd=tmp_path)
    assert wheel.returncode == 0, wheel.stdout[-3000:] + wheel.stderr[-3000:]
    builder = str(Path(sys.executable).parent / "ansible-builder")
    proc = run([builder, "create", "-f", "execution-environment.yml", "-c", "context", "-v", "3"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "No matches" not in out and "does not exist" not in out, out[-3000:]
    context = tmp_path / "context"
    (containerfile,) = [p for p in (context / "Containerfile", context / "Dockerfile") if p.is_file()]
    text = containerfile.read_text()
    assert f'ARG ANSIBLE_INSTALL_REFS="{pins["ansible-core"]} {pins["ansible-runner"]}"' in text
    assert "pip install --no-cache-dir /tmp/sendfleet/*.whl" in text
    assert [p.name for p in (context / "_build/sendfleet").iterdir()] == [f"sendfleet-{VERSION}-py3-none-any.whl"]
    assert (context / "_build/bindep.txt").read_text() == (REPO / "bindep.txt").read_text()
