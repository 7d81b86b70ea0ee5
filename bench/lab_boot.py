"""Lab boot benchmark: time from `sendfleet lab up` (cached image) to every host reachable by SSH.

Runs `lab down` (untimed) then a timed `lab up --senders N-1` (N hosts = senders + the sink), 3 times for
4 and for 8 hosts; reports medians and the 8/4 ratio, and rewrites its section of bench/RESULTS.md.
Leaves a default lab (3 senders) up if one was up when it started.  Needs root.

    sudo .venv/bin/python bench/lab_boot.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sendfleet", "lab"]
MARK_BEGIN, MARK_END = "<!-- lab_boot:begin -->", "<!-- lab_boot:end -->"


def lab(*args: str) -> None:
    subprocess.run([*CLI, *args], check=True, cwd=REPO, capture_output=True, text=True)


def timed_up(senders: int) -> float:
    lab("down")
    start = time.perf_counter()
    lab("up", "--senders", str(senders))
    return time.perf_counter() - start


def write_section(text: str) -> None:
    results = REPO / "bench" / "RESULTS.md"
    body = results.read_text() if results.exists() else "# Benchmark results\n"
    section = f"{MARK_BEGIN}\n{text}\n{MARK_END}"
    if MARK_BEGIN in body:
        head, rest = body.split(MARK_BEGIN, 1)
        body = head + section + rest.split(MARK_END, 1)[1]
    else:
        body = body.rstrip("\n") + "\n\n" + section + "\n"
    results.write_text(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    was_up = subprocess.run([*CLI, "status"], cwd=REPO, capture_output=True).returncode != 3
    lab("up")  # make sure the image is cached: this benchmark measures boots, not debootstrap
    medians: dict[int, float] = {}
    rows = []
    for hosts in (4, 8):
        times = [timed_up(hosts - 1) for _ in range(args.runs)]
        medians[hosts] = statistics.median(times)
        rows.append(f"| {hosts} | {' / '.join(f'{t:.1f}' for t in times)} | **{medians[hosts]:.1f}** |")
        print(f"{hosts} hosts: {times} median {medians[hosts]:.1f} s", flush=True)
    lab("down")
    if was_up:
        lab("up")
    ratio = medians[8] / medians[4]
    verdict = "met" if medians[4] < 60 else "NOT met"
    write_section("\n".join([
        "## Lab boot",
        "",
        f"`sudo .venv/bin/python bench/lab_boot.py --runs {args.runs}` on {time.strftime('%Y-%m-%d')}, this 2-core "
        "machine, cached image: seconds from `sendfleet lab up` to every host reachable by SSH (services started, "
        "bridge, namespaces, overlays, systemd boot, sshd).",
        "",
        "| hosts | runs (s) | median (s) |",
        "|---|---|---|",
        *rows,
        "",
        f"Ratio 8 hosts / 4 hosts: **{ratio:.2f}**. Target under 60 s for 4 hosts: **{verdict}**.",
    ]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
