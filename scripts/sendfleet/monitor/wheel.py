"""Build the sendfleet wheel that the dnsbl_monitor role installs on the senders, reproducibly.

`python -m sendfleet.monitor.wheel OUTDIR` writes OUTDIR/sendfleet-<version>-py3-none-any.whl and prints its
path. Same sources -> byte-identical wheel (fixed timestamps, sorted entries), so Ansible's copy task only
reports a change when the code changed. Built with the standard library: no setuptools/wheel on the
controller path, no network. The lab harness (sendfleet/lab) stays out: it is controller-only.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

from sendfleet import __version__

_EXCLUDE_DIRS = {"__pycache__", "lab"}
_SUFFIXES = {".py", ".yml", ".typed"}
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _files(package: Path) -> list[Path]:
    out = []
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        if path.is_file() and path.suffix in _SUFFIXES and not (set(rel.parts[:-1]) & _EXCLUDE_DIRS):
            out.append(path)
    return out


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: Path, package: Path | None = None, version: str = __version__) -> Path:
    package = package or Path(__file__).resolve().parent.parent
    name = f"sendfleet-{version}-py3-none-any.whl"
    info = f"sendfleet-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [
        (f"sendfleet/{p.relative_to(package).as_posix()}", p.read_bytes()) for p in _files(package)
    ]
    entries.append((f"{info}/METADATA", f"Metadata-Version: 2.1\nName: sendfleet\nVersion: {version}\n".encode()))
    entries.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: sendfleet.monitor.wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    entries.append((f"{info}/top_level.txt", b"sendfleet\n"))
    record = "".join(f"{n},{_digest(d)},{len(d)}\n" for n, d in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / name
    tmp = out_dir / f".{name}.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for entry, data in entries:
            zinfo = zipfile.ZipInfo(entry, _EPOCH)
            zinfo.external_attr = 0o644 << 16
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zinfo, data)
    tmp.replace(target)
    return target


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m sendfleet.monitor.wheel OUTDIR\n")
        return 2
    print(build_wheel(Path(sys.argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
