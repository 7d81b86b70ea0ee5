"""What one Ansible task costs per host on this machine, with sendfleet's ansible.cfg (Mitogen strategy), on the
lab's converged senders: the floor under the time of an idempotent `site.yml`.

A generated playbook of --tasks `ansible.builtin.stat` tasks (run) and as many `when: false` tasks (skipped) is
run against the first 1, 3 and 6 senders of the lab inventory. Wall time per run; medians of --runs. The cost of
one task on one more host is the slope between the smallest and the largest host count.

    sudo .venv/bin/python bench/task_overhead.py --hosts 1,3,6 --runs 3 --write-results

Needs the lab up with at least max(--hosts) senders (`sendfleet lab up --senders 6`); it changes nothing on them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
INV = REPO / "inventories" / "lab"
RESULTS = REPO / "bench" / "RESULTS.md"
BEGIN, END = "<!-- task_overhead:begin -->", "<!-- task_overhead:end -->"


def playbook(tasks: int, skipped: bool) -> str:
    body = [{"name": f"t{i}", "ansible.builtin.stat": {"path": "/etc/hostname", "get_checksum": False}}
            | ({"when": False} if skipped else {}) for i in range(tasks)]
    return yaml.safe_dump([{"name": "overhead", "hosts": "{{ target }}", "gather_facts": False, "tasks": body}])


def run(path: Path, hosts: list[str]) -> float:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_FORCE_COLOR": "0"}
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(INV), str(path), "-e", f"target={':'.join(hosts)}"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"ansible-playbook failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="1,3,6")
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    counts = sorted({int(n) for n in args.hosts.split(",")})
    senders = sorted(yaml.safe_load((INV / "hosts.yml").read_text())["all"]["children"]["senders"]["hosts"])
    if len(senders) < counts[-1]:
        raise SystemExit(f"the lab has {len(senders)} senders; run `sendfleet lab up --senders {counts[-1]}` first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        books = {}
        for kind in ("run", "skipped"):
            books[kind] = Path(tmp) / f"{kind}.yml"
            books[kind].write_text(playbook(args.tasks, kind == "skipped"))
        for kind, path in books.items():
            medians = {}
            for n in counts:
                runs = [run(path, senders[:n]) for _ in range(args.runs)]
                medians[n] = statistics.median(runs)
                print(f"{kind:8} {n} hosts: " + " / ".join(f"{r:.1f}" for r in runs), flush=True)
            lo, hi = counts[0], counts[-1]
            slope = (medians[hi] - medians[lo]) / ((hi - lo) * args.tasks) * 1000 if hi > lo else float("nan")
            rows.append((kind, medians, slope))
    command = f"sudo .venv/bin/python bench/task_overhead.py --hosts {args.hosts} --runs {args.runs} --write-results"
    when = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
    header = " | ".join(f"{n} host{'s' if n > 1 else ''}" for n in counts)
    lines = [BEGIN, "## What a task costs per host (the floor of an idempotent run)", "",
             f"`{command}` on {when} UTC, this 2-core machine: a playbook of {args.tasks} `stat` tasks (or "
             f"{args.tasks} `when: false` tasks) against the first N converged lab senders, sendfleet's ansible.cfg "
             "(Mitogen). Medians of wall time (s).", "",
             f"| tasks | {header} | per task and extra host |",
             "|---" * (len(counts) + 2) + "|"]
    for kind, medians, slope in rows:
        cells = " | ".join(f"{medians[n]:.1f}" for n in counts)
        lines.append(f"| {kind} | {cells} | **{slope:.0f} ms** |")
    lines += ["", "Ansible forks a worker process for every host and task (skipped ones included) and drives them "
              "from one controller process, so on 2 cores an idempotent run grows with hosts x tasks, whatever "
              "the tasks do.", END]
    text = "\n".join(lines)
    print(text)
    if args.write_results:
        old = RESULTS.read_text()
        if BEGIN in old:
            old = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
        else:
            old = old.rstrip("\n") + "\n\n" + text + "\n"
        RESULTS.write_text(old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
