"""Reaction latency of the shaper on the lab: from the first matching reply in Postfix's log to the action in force.

Needs a converged lab (`sendfleet lab up` and `bash scripts/main-job.sh --converge-only`). For each trigger, the
sink answers `421 4.7.28` to one sending IP of mta2 for gmail.test; messages go to gmail.test one at a time until
the shaper suspends that (IP, gmail) path; the latency is the shaper's event time minus the log time of the reply
that caused it (both recorded by the shaper: `ts`, `log_ts`). The path is then resumed by the operator's command
and the sink's reply removed, and the next trigger takes the next IP. The reference measured in the same command is
the time from a line written to the journal on mta2 (`logger`) to that line being readable by `journalctl`: the
floor under any log follower.

    python bench/shaper_reaction.py [--triggers 20] [--write-results]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from tests.lab.helpers import host_address, inventory_model, make_message, submit  # noqa: E402

from sendfleet.lab import control  # noqa: E402
from sendfleet.lab.config import DEFAULT_STATE_DIR  # noqa: E402
from sendfleet.lab.hosts import ssh_command  # noqa: E402
from sendfleet.lab.lab import running_config  # noqa: E402

HOST = "mta2"
STATE = "/var/lib/sendfleet/monitor/shaping.json"
PYTHON = "/opt/sendfleet/venv/bin/python"
CONFIG = "/etc/sendfleet/monitor/config.json"


def ssh(cfg: object, command: str) -> str:
    argv = ssh_command(cfg, cfg.host(HOST), cfg.inventory_dir / ".ssh" / "lab_ed25519", command)  # type: ignore[attr-defined]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def journal_floor(cfg: object, runs: int = 10) -> list[float]:
    out = []
    for _ in range(runs):
        marker = f"sendfleet-bench-{uuid.uuid4().hex}"
        code = ("import subprocess, time\n"
                f"m = {marker!r}\n"
                "t0 = time.time()\n"
                "subprocess.run(['logger', '-p', 'mail.info', m], check=True)\n"
                "while m not in subprocess.run(['journalctl', '-q', '-o', 'cat', '--since', '-1min'],\n"
                "                              capture_output=True, text=True).stdout:\n"
                "    time.sleep(0.01)\n"
                "print(time.time() - t0)\n")
        script = f"python3 -c {shlex.quote(code)}"
        out.append(float(ssh(cfg, script).strip()))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triggers", type=int, default=20)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    cfg = running_config(DEFAULT_STATE_DIR)
    if cfg is None:
        sys.exit("the lab is not up: sendfleet lab up, then scripts/main-job.sh --converge-only")
    inv = cfg.inventory_dir
    _, hosts = inventory_model(inv)
    ips = [str(e["ip"]) for e in hosts[HOST] if e["pool"] == "transactional"]
    server = host_address(inv, HOST)
    latencies: list[float] = []
    for n in range(args.triggers):
        victim = ips[n % len(ips)]
        control.sink_reply("gmail.test", "421 4.7.28 Our system has detected an unusual rate of unsolicited mail "
                           "originating from your IP address", client_ip=victim)
        try:
            start = time.time()
            event = None
            i = 0
            while event is None and time.time() - start < 300:
                submit(server, [make_message("bench@shop.test", f"bench-{n}-{i}@gmail.test", f"bench-react-{n}-{i}")])
                i += 1
                time.sleep(0.5)
                events = json.loads(ssh(cfg, f"cat {STATE}")).get("events") or []
                event = next((e for e in reversed(events) if e.get("event") == "suspend" and e.get("ip") == victim
                              and (e.get("ts") or 0) >= start - 1), None)
            if event is None:
                sys.exit(f"trigger {n}: {victim} not suspended within 300 s")
            latency = float(event["ts"]) - float(event["log_ts"])
            latencies.append(latency)
            print(f"trigger {n + 1}/{args.triggers}: {victim} suspended {latency:.2f} s after the reply was logged "
                  f"({i} message(s) sent)", flush=True)
        finally:
            control.sink_reply("gmail.test", None, client_ip=victim)
            ssh(cfg, f"{PYTHON} -m sendfleet.monitor shaping resume --config {CONFIG} --ip {shlex.quote(victim)} "
                     "--class gmail >/dev/null")
    ssh(cfg, "postqueue -f")
    floor = journal_floor(cfg)
    median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
    fmed = statistics.median(floor)
    print(f"reaction latency over {len(latencies)} triggers: median {median:.2f} s, p95 {p95:.2f} s, "
          f"max {max(latencies):.2f} s (target p95 <= 60 s); journal floor median {fmed:.3f} s")
    if args.write_results:
        load = Path("/proc/loadavg").read_text().split()[:3]
        with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as out:
            out.write(
                f"\n## Shaper reaction latency on the lab ({time.strftime('%Y-%m-%d')}, load {' '.join(load)})\n\n"
                f"`python bench/shaper_reaction.py --triggers {args.triggers}`: a 421 4.7.28 from the sink to one IP "
                "of mta2 for gmail.test, until the shaper suspends that path; latency = the shaper's event time "
                "minus the log time of the reply.\n\n"
                "| triggers | median | p95 | max | journal floor (median, reference) |\n|---|---|---|---|---|\n"
                f"| {len(latencies)} | {median:.2f} s | {p95:.2f} s | {max(latencies):.2f} s | {fmed:.3f} s |\n")
    return 0 if p95 <= 60 else 1


if __name__ == "__main__":
    raise SystemExit(main())
