"""The RCPT-time cost of the suppression lookup on the lab: a sender's smtpd asks the feedback host's PostgreSQL
(`check_recipient_access proxy:pgsql:...`) for every recipient.

Needs a converged lab (`sendfleet lab up` and `bash scripts/main-job.sh --converge-only`). On mta1, runs alternate
between the lookup on (the role's smtpd_recipient_restrictions) and off (the same without the lookup, the reference,
set with `postconf -e` and a reload); the role's value is restored at the end, even on failure. Each run measures:
- RCPT round trips: one SMTP session from an app address, MAIL once, then `--rcpts` RCPT TO of distinct addresses of
  a domain of class other (the shaper answers DUNNO for it), RSET every 50; p50 and p99 of the round trip;
- submission throughput: `--messages` small messages over 4 parallel sessions, each to a distinct recipient;
  messages accepted per second (the sender's throughput as its applications see it).
Reported: medians over the runs of each mode and the ratios on/off (target: throughput ratio >= 0.95).

    python bench/suppression_lookup.py [--runs 5] [--rcpts 400] [--messages 400] [--write-results]
"""

from __future__ import annotations

import argparse
import os
import shlex
import smtplib
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from tests.lab.helpers import host_address, make_message  # noqa: E402

from sendfleet.lab.config import DEFAULT_STATE_DIR  # noqa: E402
from sendfleet.lab.hosts import ssh_command  # noqa: E402
from sendfleet.lab.lab import running_config  # noqa: E402

HOST = "mta1"
LOOKUP = "check_recipient_access proxy:pgsql:/etc/postfix/suppression.cf"
SOURCES = ["198.51.100.32", "198.51.100.33", "198.51.100.34", "198.51.100.35"]


def ssh(cfg: object, command: str) -> str:
    argv = ssh_command(cfg, cfg.host(HOST), cfg.inventory_dir / ".ssh" / "lab_ed25519", command)  # type: ignore[attr-defined]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def set_restrictions(cfg: object, value: str) -> None:
    ssh(cfg, f"postconf -e {shlex.quote('smtpd_recipient_restrictions = ' + value)} && postfix reload 2>/dev/null")
    time.sleep(1.5)  # smtpd processes re-read main.cf when they start


def rcpt_times(server: str, count: int) -> list[float]:
    out: list[float] = []
    run = uuid.uuid4().hex[:6]
    with smtplib.SMTP(server, 25, source_address=(SOURCES[0], 0), timeout=30) as smtp:
        smtp.ehlo("app.lab.test")
        for i in range(count):
            if i % 50 == 0:
                if i:
                    smtp.rset()
                smtp.mail("app@shop.test")
            start = time.perf_counter()
            code, _ = smtp.rcpt(f"bench-{run}-{i}@smallbiz.test")
            out.append(time.perf_counter() - start)
            if code != 250:
                raise SystemExit(f"RCPT answered {code}: is the lab converged?")
        smtp.rset()
    return out


def throughput(server: str, count: int) -> float:
    run = uuid.uuid4().hex[:6]
    per = count // len(SOURCES)

    def session(k: int) -> None:
        with smtplib.SMTP(server, 25, source_address=(SOURCES[k], 0), timeout=60) as smtp:
            smtp.ehlo("app.lab.test")
            for i in range(per):
                smtp.send_message(make_message("app@shop.test", f"tp-{run}-{k}-{i}@smallbiz.test", f"bench-{run}"))

    start = time.perf_counter()
    with ThreadPoolExecutor(len(SOURCES)) as pool:
        list(pool.map(session, range(len(SOURCES))))
    return per * len(SOURCES) / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rcpts", type=int, default=400)
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--write-results", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    cfg = running_config(DEFAULT_STATE_DIR)
    if cfg is None:
        raise SystemExit("the lab is not up: sendfleet lab up && bash scripts/main-job.sh --converge-only")
    server = host_address(cfg.inventory_dir, HOST)
    original = ssh(cfg, "postconf -h smtpd_recipient_restrictions").strip()
    if LOOKUP not in original:
        raise SystemExit(f"{HOST} has no suppression lookup in smtpd_recipient_restrictions: converge the lab")
    without = ", ".join(p.strip() for p in original.split(",") if p.strip() != LOOKUP)
    results: dict[str, dict[str, list[float]]] = {m: {"p50": [], "p99": [], "tput": []} for m in ("on", "off")}
    try:
        for run in range(args.runs):
            for mode in ("off", "on") if run % 2 == 0 else ("on", "off"):
                set_restrictions(cfg, original if mode == "on" else without)
                times = rcpt_times(server, args.rcpts)
                results[mode]["p50"].append(percentile(times, 0.5) * 1e3)
                results[mode]["p99"].append(percentile(times, 0.99) * 1e3)
                results[mode]["tput"].append(throughput(server, args.messages))
                print(f"run {run + 1}/{args.runs} lookup {mode}: RCPT p50 {results[mode]['p50'][-1]:.2f} ms "
                      f"p99 {results[mode]['p99'][-1]:.2f} ms, {results[mode]['tput'][-1]:.0f} msg/s", flush=True)
    finally:
        set_restrictions(cfg, original)
    med = {m: {k: statistics.median(v) for k, v in r.items()} for m, r in results.items()}
    ratio = med["on"]["tput"] / med["off"]["tput"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"## Suppression lookup at RCPT on the lab ({time.strftime('%Y-%m-%d')}, load {load})",
        "",
        f"`python bench/suppression_lookup.py --runs {args.runs} --rcpts {args.rcpts} --messages {args.messages}`: "
        f"mta1's smtpd with `{LOOKUP}` (PostgreSQL on fb) against the same restrictions without it (reference), "
        "alternating; medians over the runs.",
        "",
        "| lookup | RCPT p50 | RCPT p99 | submission msg/s |",
        "|---|---|---|---|",
        f"| on | {med['on']['p50']:.2f} ms | {med['on']['p99']:.2f} ms | {med['on']['tput']:.0f} |",
        f"| off (reference) | {med['off']['p50']:.2f} ms | {med['off']['p99']:.2f} ms | {med['off']['tput']:.0f} |",
        "",
        f"Throughput ratio on/off: **{ratio:.3f}** (target >= 0.95: **{'met' if ratio >= 0.95 else 'not met'}**); "
        f"RCPT p50 +{med['on']['p50'] - med['off']['p50']:.2f} ms.",
        "",
    ]
    print("\n".join(lines))
    if args.write_results:
        with (REPO / "bench" / "RESULTS.md").open("a") as fh:
            fh.write("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
