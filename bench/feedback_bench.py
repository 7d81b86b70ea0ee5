"""Messages per second through the feedback processor: reading the messages (the reference: the same files read,
nothing parsed), parsing them (`sendfleet.core.feedback.parse_message`), parsing and storing them in a real
throwaway PostgreSQL 15 (events, suppression policy, reports: one transaction per message over one connection),
and the processor's whole entry (`processor.process`: connect, parse, store, metrics textfile) per message. Medians
of several runs, all measured in the same command; plus the start-up of the Python process Postfix's pipe spawns
for every message.

The mix: 50 % hard-bounce DSNs, 20 % soft, 10 % blocks (Gmail 5.7.26), 15 % ARF complaints, 5 % gzipped DMARC
aggregate reports; every recipient distinct. MX lookups are answered from a table (no DNS traffic).

    sudo .venv/bin/python bench/feedback_bench.py [--runs 5] [--messages 2000] [--write-results]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from tests.local.pgcluster import Cluster, cluster  # noqa: E402
from tests.local.test_feedback_store import _write_config, arf, dmarc_message, dsn, verp  # noqa: E402

from sendfleet.core import feedback  # noqa: E402
from sendfleet.dns import mx  # noqa: E402
from sendfleet.feedback import config, processor, store  # noqa: E402

MX = {"gmail.test": ["gmail-smtp-in.l.google.com."], "yahoo.test": ["mta5.am0.yahoodns.net."]}
BLOCK = "550 5.7.26 This mail has been blocked because the sender is unauthenticated"


def messages(n: int) -> list[tuple[bytes, str]]:
    out: list[tuple[bytes, str]] = []
    for i in range(n):
        slot = i % 20
        rcpt = f"r{i}@{'gmail' if i % 2 else 'yahoo'}.test"
        if slot < 10:
            out.append((dsn(rcpt, "5.1.1"), verp(rcpt)))
        elif slot < 14:
            out.append((dsn(rcpt, "4.2.2", diagnostic="452 4.2.2 mailbox full"), verp(rcpt)))
        elif slot < 16:
            out.append((dsn(rcpt, "5.7.26", diagnostic=BLOCK), verp(rcpt)))
        elif slot < 19:
            out.append((arf(rcpt), "fbl@bounces.shop.test"))
        else:
            out.append((dmarc_message(f"r-{i}"), "dmarc@bounces.shop.test"))
    return out


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


Files = list[tuple[Path, str]]


def read(files: Files) -> int:
    return sum(1 for path, _ in files if path.read_bytes())


def _parse(path: Path, rcpt: str, cfg: config.Config) -> feedback.Parsed:
    return feedback.parse_message(path.read_bytes(), rcpt, bounce_domains=cfg.bounce_domains,
                                  fleet_ips=cfg.fleet_ips, rules=cfg.classes, limits=cfg.limits)


def parse(files: Files, cfg: config.Config) -> int:
    n = 0
    for path, rcpt in files:
        parsed = _parse(path, rcpt, cfg)
        n += len(parsed.bounces) + len(parsed.complaints) + (parsed.dmarc is not None)
    return n


def _classifier(cfg: config.Config) -> processor.MxClassifier:
    return processor.MxClassifier(cfg.classes, lookup=lambda d: mx.MxAnswer(mx.OK, tuple(MX[d])))


def parse_store(files: Files, cfg: config.Config) -> int:
    of = _classifier(cfg)
    n = 0
    with store.connect(cfg.database) as conn:
        for path, rcpt in files:
            out = processor.store_parsed(cfg, conn, _parse(path, rcpt, cfg), of, datetime.now(UTC))
            n += out.outcome == "stored"
    return n


def process(files: Files, cfg: config.Config) -> int:
    of = _classifier(cfg)
    n = 0
    for path, rcpt in files:
        with path.open("rb") as stdin:
            code, out = processor.process(cfg, stdin, rcpt, "MAILER-DAEMON", classifier=of, err=io.StringIO())
        n += code == 0 and out is not None and out.outcome == "stored"
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    msgs = messages(args.messages)
    loads: list[str] = []
    rates: dict[str, list[float]] = {k: [] for k in ("read", "parse", "store", "process")}
    counts: dict[str, set[int]] = {k: set() for k in rates}
    with tempfile.TemporaryDirectory() as tmp, cluster() as pg:
        root = Path(tmp)
        files: Files = []
        for i, (raw, rcpt) in enumerate(msgs):
            path = root / "in" / f"{i:06d}.eml"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(raw)
            files.append((path, rcpt))
        size = sum(len(raw) for raw, _ in msgs)
        for run in range(args.runs):
            loads.append(Path("/proc/loadavg").read_text().split()[0])
            cfg = _fresh(pg, root / f"run{run}-store")
            cfg_process = _fresh(pg, root / f"run{run}-process")

            stages: list[tuple[str, Callable[[], int]]] = [
                ("read", partial(read, files)), ("parse", partial(parse, files, cfg)),
                ("store", partial(parse_store, files, cfg)), ("process", partial(process, files, cfg_process))]
            for name, fn in stages:
                seconds, n = timed(fn)
                rates[name].append(len(files) / seconds)
                counts[name].add(n)
            with store.connect(cfg.database) as conn:
                suppressed = store.active_by_reason(conn)
        startup = _startup(args.runs)
    med = {k: statistics.median(v) for k, v in rates.items()}
    report = _report(args, med, rates, counts, startup, loads, size, suppressed)
    print(report)
    if args.write_results:
        path = REPO / "bench" / "RESULTS.md"
        text = path.read_text(encoding="utf-8")
        block = f"<!-- feedback_bench:begin -->\n{report}\n<!-- feedback_bench:end -->"
        if "<!-- feedback_bench:begin -->" in text:
            text = re.sub(r"<!-- feedback_bench:begin -->.*?<!-- feedback_bench:end -->", lambda _: block, text,
                          flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        path.write_text(text, encoding="utf-8")
    return 0


def _fresh(pg: Cluster, root: Path) -> config.Config:
    root.mkdir(parents=True)
    path = _write_config(root / "feedback.yml", pg.create_database(root.name.replace("-", "_")), root)
    cfg = config.load(path)
    with store.connect(cfg.database) as conn:
        store.migrate(conn)
    return cfg


def _startup(runs: int) -> float:
    """Seconds to start the interpreter and import what `python -m sendfleet.feedback process` imports."""
    code = ("import sendfleet.feedback.__main__, sendfleet.feedback.processor, sendfleet.core.feedback, psycopg, "
            "dns.resolver")
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    times = []
    for _ in range(max(runs, 5)):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _report(args: argparse.Namespace, med: dict[str, float], rates: dict[str, list[float]],
            counts: dict[str, set[int]], startup: float, loads: list[str], size: int,
            suppressed: dict[str, int]) -> str:
    def runs(name: str) -> str:
        return " / ".join(f"{r:,.0f}" for r in rates[name])

    rows = [("read the files (reference)", "read"), ("read + parse", "parse"),
            ("read + parse + store (one connection)", "store"), ("processor.process per message", "process")]
    table = "\n".join(f"| {label} | {runs(k)} | **{med[k]:,.0f}** | {med['read'] / med[k]:.1f} |" for label, k in rows)
    return (
        "## Feedback processor: messages per second\n\n"
        f"`sudo .venv/bin/python bench/feedback_bench.py --runs {args.runs} --messages {args.messages}"
        f"{' --write-results' if args.write_results else ''}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, this "
        f"2-core machine (Python {sys.version.split()[0]}), shared with other work while it ran (1-minute load "
        f"average at the start of each run: {' / '.join(loads)}).\n\n"
        f"{args.messages:,} messages ({size / 1e6:.1f} MB) in files: 50 % hard-bounce DSNs, 20 % soft, 10 % blocks, "
        "15 % ARF complaints, 5 % gzipped DMARC aggregate reports, every recipient distinct. Store = a throwaway "
        "PostgreSQL 15 cluster on a unix socket (fsync off), a fresh database per run; MX lookups answered from a "
        "table. `processor.process` = the pipe's entry without the process start: connect, read, parse, store in one "
        "transaction, rewrite the metrics textfile.\n\n"
        "| messages/s | runs | median | reference / this |\n|---|---|---|---|\n"
        f"{table}\n\n"
        f"Postfix's pipe starts one Python process per message: interpreter start-up and the processor's imports "
        f"take **{startup * 1000:.0f} ms** (median), so one pipe process handles about "
        f"{1 / (startup + 1 / med['process']):.1f} messages/s and `feedback_processes` of them run at once.\n"
        f"Checks: items parsed per run {sorted(counts['parse'])}, messages stored {sorted(counts['store'])} and "
        f"{sorted(counts['process'])} (of {args.messages:,}); active suppressions after a run: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(suppressed.items()))}."
    )


if __name__ == "__main__":
    raise SystemExit(main())
