"""The repository speaks for itself: no file points at notes outside it or at issue numbers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared|\bDESIGN\.md\b|\bissues? ?#?[0-9]+\b", re.IGNORECASE)


def test_no_reference_to_outside_notes_or_issue_numbers() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    found = []
    for name in filter(None, files.decode().split("\0")):
        path = REPO / name
        if path.is_symlink() or not path.is_file() or path.suffix in (".png", ".gz", ".pem"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "\n".join(found)


def test_readme_opens_with_the_two_commands_that_ci_runs() -> None:
    """The README's first two commands work on a root shell without sudo, and the second is what CI runs."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands == ["bash scripts/setup.sh && bash scripts/main-job.sh", "bash scripts/test.sh"]
    assert readme.index("```sh") < readme.index("## Your own fleet")
    assert "exec bash scripts/test.sh" in (REPO / ".ci/run").read_text()
    for script in ("scripts/setup.sh", "scripts/main-job.sh", "scripts/test.sh"):
        assert "sudo" not in (REPO / script).read_text(), script
    # the lab tests run command 1's main job (tests/lab/conftest.py: main-job.sh --converge-only)
    assert "scripts/main-job.sh" in (REPO / "tests/lab/conftest.py").read_text()
