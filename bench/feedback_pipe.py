"""The cost of one pipe delivery on the feedback host: Postfix's pipe(8) starts
`python -m sendfleet.feedback process` for every message. Wall time of that process for one small DSN (a hard
bounce, a new recipient each time) and one gzipped DMARC report against a throwaway PostgreSQL 15 cluster (unix
socket, fsync off), medians of --runs, with `python -c pass` measured in the same command as the reference.

The recipient domain's MX lookup goes to a resolver in two settings: the machine's own (answers at once) and a
silent one (a UDP socket on 127.0.0.9:53 that never answers, written into /etc/resolv.conf by a bind mount in a
private mount namespace: the script re-executes itself under `unshare -m`, so it needs root). What dominates is
shown by `python -X importtime` (the largest imports, cumulative) and by the phases timed in one process.

    sudo .venv/bin/python bench/feedback_pipe.py [--runs 20] [--scripts LABEL=DIR ...] [--json FILE]

`--scripts`: the sendfleet trees to measure, each run interleaving them (default this checkout's scripts/; a copy
of an older tree measures the "before" in the same command).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.local.pgcluster import cluster  # noqa: E402
from tests.local.test_feedback_store import _write_config, dmarc_message, dsn, verp  # noqa: E402

SILENT = "127.0.0.9"
PHASES = r"""
import sys, time, json
t0 = time.perf_counter()
from sendfleet.feedback import __main__ as entry, config, processor, store
from sendfleet.dns import mx
t1 = time.perf_counter()
cfg = config.load(__import__('pathlib').Path(sys.argv[1]))
t2 = time.perf_counter()
with store.connect(cfg.database) as conn:
    t3 = time.perf_counter()
    conn.execute("SELECT 1").fetchone()
t4 = time.perf_counter()
classify = processor.MxClassifier(cfg.classes, timeout=float(sys.argv[2]))
classify("someone@gmail.test")
t5 = time.perf_counter()
table = processor.MxClassifier(cfg.classes, lookup=lambda d: mx.MxAnswer(mx.OK, ("gmail-smtp-in.l.google.com",)))
code, _ = processor.process(cfg, sys.stdin.buffer, sys.argv[3], "MAILER-DAEMON", classifier=table)
t6 = time.perf_counter()
assert code == 0
print(json.dumps({"import": t1 - t0, "config": t2 - t1, "connect": t3 - t2, "mx": t5 - t4,
                  "process (parse, store, metrics; no lookup)": t6 - t5}))
"""


def _silent_resolver(stop: threading.Event) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((SILENT, 53))
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            sock.recvfrom(4096)  # read and never answer
        except TimeoutError:
            continue
    sock.close()


def _timed(argv: list[str], env: dict[str, str], stdin: bytes = b"") -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=False, timeout=120)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]}: exit {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--scripts", action="append", metavar="LABEL=DIR",
                    help="a sendfleet tree to measure, repeatable (default: now=this checkout's scripts/)")
    ap.add_argument("--json", type=Path, help="write the figures there too")
    args = ap.parse_args()
    if os.environ.get("SF_BENCH_NS") != "1":
        if os.geteuid() != 0:
            raise SystemExit("needs root (a private mount namespace for the silent resolver's resolv.conf)")
        os.environ["SF_BENCH_NS"] = "1"
        os.execvp("unshare", ["unshare", "-m", "--propagation", "private", sys.executable, *sys.argv])
    trees = dict(t.split("=", 1) for t in args.scripts or [f"now={REPO / 'scripts'}"])
    envs = {label: {**os.environ, "PYTHONPATH": str(Path(d).resolve())} for label, d in trees.items()}
    py = sys.executable
    figures: dict[str, list[float]] = {}
    phases: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
    imports: dict[str, str] = {}
    with cluster() as pg, tempfile.TemporaryDirectory(prefix="sf-pipe-") as tmp:
        root = Path(tmp)
        path = _write_config(root / "feedback.yml", pg.create_database("pipe"), root)
        assert _timed([py, "-m", "sendfleet.feedback", "schema", "--config", str(path)], envs[next(iter(trees))]) > 0
        silent_conf = root / "resolv.conf"
        silent_conf.write_text(f"nameserver {SILENT}\n")
        stop = threading.Event()
        threading.Thread(target=_silent_resolver, args=(stop,), daemon=True).start()
        n = 0

        def one(label: str, what: str) -> float:
            nonlocal n
            n += 1
            if what == "DSN":
                rcpt = f"r{n}@gmail.test"
                raw, envelope = dsn(rcpt, "5.1.1"), verp(rcpt)
            else:
                raw, envelope = dmarc_message(f"rep-{n}"), "dmarc@bounces.shop.test"
            return _timed([py, "-m", "sendfleet.feedback", "process", "--config", str(path), "--recipient", envelope,
                           "--sender", "MAILER-DAEMON"], envs[label], raw)

        for _ in range(args.runs):  # interleaved, so that the machine's load weighs on each alike
            figures.setdefault("python -c pass (reference)", []).append(_timed([py, "-c", "pass"], os.environ))
            for label in trees:
                for what in ("DSN", "DMARC report"):
                    figures.setdefault(f"{label}: process, {what}, resolver answers", []).append(one(label, what))
                n += 1
                rcpt = f"r{n}@gmail.test"
                phases[label].append(json.loads(subprocess.run(
                    [py, "-c", PHASES, str(path), "5", verp(rcpt)], input=dsn(rcpt, "5.1.1"), capture_output=True,
                    env=envs[label], check=True).stdout))
        for label in trees:
            imports[label] = subprocess.run(
                [py, "-X", "importtime", "-c",
                 "import sendfleet.feedback.__main__; import sendfleet.feedback.processor"],
                capture_output=True, env=envs[label], text=True, check=True).stderr
        subprocess.run(["mount", "--bind", str(silent_conf), "/etc/resolv.conf"], check=True)
        try:
            for _ in range(max(3, args.runs // 4)):
                for label in trees:
                    for what in ("DSN", "DMARC report"):
                        figures.setdefault(f"{label}: process, {what}, silent resolver", []).append(one(label, what))
        finally:
            subprocess.run(["umount", "/etc/resolv.conf"], check=True)
            stop.set()
    out: dict[str, object] = {
        "trees": trees, "runs": args.runs, "load": os.getloadavg()[0],
        "medians_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in figures.items()},
        "runs_ms": {k: [round(x * 1000, 1) for x in v] for k, v in figures.items()},
        "phases_ms": {label: {k: round(statistics.median(p[k] for p in ph) * 1000, 1) for k in ph[0]}
                      for label, ph in phases.items()}}
    tops: dict[str, list[str]] = {}
    for label, text in imports.items():
        rows = []  # (cumulative us, depth, module): depth 0 = imported by the entry itself
        for line in text.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                name = parts[2].rstrip()
                rows.append((int(parts[1]), (len(name) - len(name.lstrip()) - 1) // 2, name.strip()))
        tops[label] = [f"{'  ' * d}{m} {us / 1000:.1f}" for us, d, m in sorted(rows, reverse=True)[:20]]
    out["importtime_top_ms"] = tops
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
