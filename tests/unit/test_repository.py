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
