"""Converge time of `ansible-playbook site.yml` from bare lab hosts, for 1, 3 and 6 senders, and the time
of the idempotent second run.

Each run: `sendfleet lab down` + `sendfleet lab up --senders N` (bare hosts from the cached image), the main
job's preparation (vet --admit of the candidate range into two pools, pool assign), then
  first  = wall time of `ansible-playbook site.yml` (must end with failed=0),
  second = wall time of the immediate second run (must report changed=0 on every host).
Medians of --runs runs per size; ratios: second/first (target < 0.25) and 6/3 senders (target <= 1.3),
3 senders under 5 minutes.

It takes the lab down and up again: run it only when nobody else uses the lab (--i-own-the-lab).
`--write-results` replaces the converge_bench section of bench/RESULTS.md.

    sudo .venv/bin/python bench/converge_bench.py --sizes 1,3,6 --runs 3 --i-own-the-lab --write-results
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INV = REPO / "inventories" / "lab"
ZONES = REPO / "scripts" / "sendfleet" / "zones" / "lab.yml"
RESULTS = REPO / "bench" / "RESULTS.md"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_FORCE_COLOR": "0"}
    proc = subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def recap(output: str) -> dict[str, tuple[int, int, int]]:
    tail = output[output.rindex("PLAY RECAP"):]
    return {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in RECAP.finditer(tail)}


def prepare(senders: int) -> None:
    sh(str(BIN / "sendfleet"), "lab", "down")
    sh(str(BIN / "sendfleet"), "lab", "up", "--senders", str(senders))
    for cidr, pool in (("198.51.100.64/27", "transactional"), ("198.51.100.96/27", "marketing")):
        rc = sh(str(BIN / "sendfleet"), "vet", cidr, "--zones", str(ZONES), "--resolver", "198.51.100.4",
                "--admit", str(INV), "--pool", pool, "--format", "json", check=False).returncode
        if rc > 1:
            raise SystemExit(f"vet {cidr} failed ({rc})")
    sh(str(BIN / "sendfleet"), "pool", "assign", "-i", str(INV), "--pool", "transactional", "--per-host", "3")
    sh(str(BIN / "sendfleet"), "pool", "assign", "-i", str(INV), "--pool", "marketing", "--per-host", "2")


def converge() -> tuple[float, dict[str, tuple[int, int, int]]]:
    start = time.monotonic()
    proc = sh(str(BIN / "ansible-playbook"), "-i", str(INV), "site.yml", check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"site.yml failed ({proc.returncode}):\n{proc.stdout[-5000:]}")
    return elapsed, recap(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,3,6")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--i-own-the-lab", action="store_true", help="allow lab down/up (required)")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    if not args.i_own_the_lab:
        parser.error("this benchmark takes the lab down and up again: pass --i-own-the-lab")
    sizes = [int(s) for s in args.sizes.split(",")]
    first: dict[int, list[float]] = {n: [] for n in sizes}
    second: dict[int, list[float]] = {n: [] for n in sizes}
    for run in range(args.runs):
        for n in sizes:
            prepare(n)
            t1, r1 = converge()
            t2, r2 = converge()
            failed = {h: r for h, r in r1.items() if r[1] or r[2]}
            if failed:
                raise SystemExit(f"{n} senders, run {run + 1}: first converge failed on {failed}")
            changed = {h: r for h, r in r2.items() if r[0] or r[1] or r[2]}
            if changed:
                raise SystemExit(f"{n} senders, run {run + 1}: second run not idempotent: {changed}")
            first[n].append(t1)
            second[n].append(t2)
            print(f"run {run + 1}, {n} senders: first {t1:.1f} s, second {t2:.1f} s", flush=True)
    med1 = {n: statistics.median(v) for n, v in first.items()}
    med2 = {n: statistics.median(v) for n, v in second.items()}
    lines = [
        "<!-- converge_bench:begin -->",
        "## Converge time of site.yml",
        "",
        f"`sudo .venv/bin/python bench/converge_bench.py --sizes {args.sizes} --runs {args.runs} --i-own-the-lab "
        f"--write-results` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, this 2-core machine: "
        "bare lab hosts (`lab down`/`lab up --senders N`), vet + pool assign, then `ansible-playbook site.yml` "
        "(first) and again (second, changed=0 checked).",
        "",
        "| senders | first runs (s) | median | second runs (s) | median | second / first |",
        "|---|---|---|---|---|---|",
    ]
    for n in sizes:
        lines.append(f"| {n} | {' / '.join(f'{t:.0f}' for t in first[n])} | **{med1[n]:.0f}** | "
                     f"{' / '.join(f'{t:.0f}' for t in second[n])} | **{med2[n]:.0f}** | {med2[n] / med1[n]:.2f} |")
    if 3 in med1 and 6 in med1:
        lines += ["", f"6 / 3 senders (first run): **{med1[6] / med1[3]:.2f}** (target <= 1.3); "
                  f"3 senders: **{med1[3]:.0f} s** (target < 300 s)."]
    lines.append("<!-- converge_bench:end -->")
    section = "\n".join(lines)
    print(section)
    if args.write_results:
        text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        pattern = re.compile(r"<!-- converge_bench:begin -->.*?<!-- converge_bench:end -->", re.S)
        text = pattern.sub(section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
