"""Benchmark of the agent's delivery metrics: how many series 50,000 deliveries to 5,000 recipient domains make, and
the CPU per 10,000 log lines.

A sender's log, synthetic: --deliveries delivery lines (default 50,000) to --domains distinct recipient domains
(default 5,000), spread over 4 IPv4 and 1 IPv6 sending IPs and their per-(IP, class) transports (the shipped provider
classes), 75 % sent, 20 % deferred (with a handful of providers' replies), 5 % bounced, each after qmgr's
`from=<...>` line for the message (VERP senders at 3 sender domains' bounce domains, and strangers), and qmgr's
`removed` line after the final delivery. Every line goes through `DeliveryBook.feed` (the agent's path since the
counts per sender domain) and then `agent.delivery_metrics` renders the textfile.

Series: counted in the rendered text per family and asserted against the bound: sendfleet_delivery_total = IPs x
(classes + other) x statuses, whatever the recipients; sendfleet_delivery_sender_domain_total = (sender domains +
other) x statuses; reasons at most reasons_top.

Time: CPU (user + system of this process) per 10,000 lines, median of --runs runs (at least 5), one after the other
in each run on the same lines:
- reference: `maillog.parse_delivery` alone over the lines (the parse the agent did before the sender domains);
- parse + add: `parse_delivery` and `DeliveryBook.add` for the delivery lines (no envelopes: sender domain other);
- feed: `DeliveryBook.feed` over the lines (parse + count per IP/class/status and per sender domain);
- metrics: one `delivery_metrics` render of the book.

    .venv/bin/python bench/series_bench.py --runs 7 --write-results
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import statistics
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from sendfleet.core import maillog, poolmap, shaping  # noqa: E402
from sendfleet.core.metrics import parse, samples_of  # noqa: E402
from sendfleet.monitor import agent  # noqa: E402

RESULTS = REPO / "bench" / "RESULTS.md"
SEED = 2026
IPS = ["198.51.100.70", "198.51.100.71", "198.51.100.72", "198.51.100.73", "2001:db8:5f::48"]
SENDER_DOMAINS = {"shop.test": "bounces.shop.test", "news.test": "bounces.news.test", "app.test": "bounces.app.test"}
REPLIES = [
    "host mx[198.51.100.20] said: 421-4.7.28 Our system has detected an unusual rate of unsolicited mail "
    "(in reply to end of DATA command)",
    "host mx[198.51.100.20] said: 421 4.7.0 [TSS04] Messages from {ip} temporarily deferred (in reply to MAIL FROM "
    "command)",
    "host mx[198.51.100.20] said: 451 4.7.650 The mail server [{ip}] has been temporarily rate limited due to IP "
    "reputation (in reply to MAIL FROM command)",
    "connect to mx.d{n}.test[198.51.100.{m}]:25: Connection timed out",
    "host mx[198.51.100.20] said: 450 4.2.0 <u@d{n}.test>: Recipient address rejected: Greylisted (in reply to RCPT "
    "TO command)",
]
BOUNCES = [
    "host mx[198.51.100.20] said: 550 5.1.1 <u@d{n}.test>: user unknown (in reply to RCPT TO command)",
    "host mx[198.51.100.20] said: 550 5.7.1 Service unavailable, Client host [{ip}] blocked (in reply to RCPT TO "
    "command)",
]


def config() -> agent.Config:
    classes = shaping.default_data()
    members = [{"ip": ip, "pool": "t", "transport": poolmap.transport_name(ip, "sf")} for ip in IPS]
    return agent.Config({"zones_file": "/z", "members": members, "shaping": {"classes": classes},
                         "sender_domains": SENDER_DOMAINS}, "bench")


def make_lines(deliveries: int, domains: int, cfg: agent.Config) -> tuple[list[tuple[str, str]], Counter[str]]:
    rng = random.Random(SEED)
    classes = [*cfg.classes, poolmap.OTHER_CLASS]
    senders = [f"b+u=d{{n}}.test@{bounce}" for bounce in SENDER_DOMAINS.values()] + ["news@stranger{n}.test"]
    lines: list[tuple[str, str]] = []
    kinds: Counter[str] = Counter()
    for i in range(deliveries):
        n = i % domains
        ip = IPS[rng.randrange(len(IPS))]
        klass = classes[rng.randrange(len(classes))]
        transport = poolmap.transport_name(ip, "sf")
        if klass != poolmap.OTHER_CLASS:
            transport = poolmap.class_transport_of(transport, klass)
        qid = f"4Q{i:08X}z"
        sender = senders[rng.randrange(len(senders))].format(n=n)
        lines.append(("postfix/qmgr", f"{qid}: from=<{sender}>, size=2048, nrcpt=1 (queue active)"))
        roll = rng.random()
        if roll < 0.75:
            status, dsn, text = "sent", "2.0.0", "250 2.0.0 Ok: queued as 4Qabc"
        elif roll < 0.95:
            status, dsn = "deferred", "4.7.0"
            text = REPLIES[rng.randrange(len(REPLIES))].format(ip=ip, n=n, m=n % 250)
        else:
            status, dsn = "bounced", "5.1.1"
            text = BOUNCES[rng.randrange(len(BOUNCES))].format(ip=ip, n=n)
        kinds[status] += 1
        lines.append((f"postfix/{transport}/smtp",
                      f"{qid}: to=<u{i}@d{n}.test>, relay=mx.d{n}.test[198.51.100.20]:25, delay=0.4, "
                      f"delays=0.1/0/0.1/0.2, dsn={dsn}, status={status} ({text})"))
        if status != "deferred":
            lines.append(("postfix/qmgr", f"{qid}: removed"))
    return lines, kinds


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_run(lines: list[tuple[str, str]], cfg: agent.Config) -> dict[str, Any]:
    load = os.getloadavg()[0]
    t0 = cpu()
    parsed = sum(1 for ident, msg in lines if maillog.parse_delivery(ident, msg, 1.0) is not None)
    t1 = cpu()
    plain = maillog.DeliveryBook(cfg.transports, cfg.classes)  # the delivery lines alone, as the agent did before
    for ident, msg in lines:
        d = maillog.parse_delivery(ident, msg, 1_764_730_000.0)
        if d is not None:
            plain.add(d)
    t2 = cpu()
    book = maillog.DeliveryBook(cfg.transports, cfg.classes, cfg.sender_domains)
    fed = sum(1 for ident, msg in lines if book.feed(ident, msg, 1_764_730_000.0))
    t3 = cpu()
    text = agent.delivery_metrics(book, cfg, 1.0)
    t4 = cpu()
    assert plain.totals == book.totals  # the sender domains change no count per IP, class and status
    return {"load": load, "reference": t1 - t0, "add": t2 - t1, "feed": t3 - t2, "metrics": t4 - t3,
            "parsed": parsed, "fed": fed, "text": text, "book": book}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deliveries", type=int, default=50_000)
    ap.add_argument("--domains", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--write-results", action="store_true", help=f"put the figures into {RESULTS.name}")
    args = ap.parse_args()
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median of fewer says little)")
    cfg = config()
    lines, kinds = make_lines(args.deliveries, args.domains, cfg)
    runs = [one_run(lines, cfg) for _ in range(args.runs)]
    last = runs[-1]
    samples = parse(last["text"])
    families = Counter(name for name, _ in samples)
    providers = len(cfg.classes) + 1
    bound = len(IPS) * providers * len(maillog.STATUSES)
    domain_bound = (len(SENDER_DOMAINS) + 1) * len(maillog.STATUSES)
    assert last["parsed"] == args.deliveries, last["parsed"]
    assert families["sendfleet_delivery_total"] == bound, (families["sendfleet_delivery_total"], bound)
    assert families["sendfleet_delivery_sender_domain_total"] == domain_bound
    assert families["sendfleet_delivery_reason_total"] <= cfg.reasons_top
    by_domain = {(lbl["sender_domain"], lbl["status"]): v
                 for lbl, v in samples_of(samples, "sendfleet_delivery_sender_domain_total")}
    assert sum(by_domain.values()) == args.deliveries
    assert sum(v for (_, st), v in by_domain.items() if st == "sent") == kinds["sent"]
    assert not last["book"].envelopes or all(q for q in last["book"].envelopes)
    in_flight = len(last["book"].envelopes)
    assert in_flight == kinds["deferred"], (in_flight, kinds["deferred"])  # removed after sent and bounced only
    per10k = {k: statistics.median(r[k] for r in runs) * 10_000 / len(lines) for k in ("reference", "add", "feed")}
    metrics_ms = statistics.median(r["metrics"] for r in runs) * 1000
    summary = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
        "python": sys.version.split()[0], "lines": len(lines), "deliveries": args.deliveries,
        "domains": args.domains, "kinds": kinds, "families": families, "series": len(samples), "bound": bound,
        "domain_bound": domain_bound, "providers": providers, "per10k": per10k, "metrics_ms": metrics_ms,
        "runs": runs, "in_flight": in_flight,
    }
    print(f"{args.deliveries:,} deliveries to {args.domains:,} recipient domains, {len(lines):,} log lines")
    print(f"series: {len(samples)} in all; sendfleet_delivery_total {families['sendfleet_delivery_total']} = "
          f"{len(IPS)} IPs x {providers} classes x {len(maillog.STATUSES)} statuses; sender domain "
          f"{families['sendfleet_delivery_sender_domain_total']} = {len(SENDER_DOMAINS) + 1} x 3; reasons "
          f"{families['sendfleet_delivery_reason_total']}")
    print(f"CPU per 10,000 lines (median of {args.runs}): reference parse {per10k['reference'] * 1000:.1f} ms, "
          f"parse + add {per10k['add'] * 1000:.1f} ms, feed {per10k['feed'] * 1000:.1f} ms "
          f"(x{per10k['feed'] / per10k['reference']:.2f}); metrics render "
          f"{metrics_ms:.1f} ms")
    if args.write_results:
        write_results(summary, args)
    return 0


def write_results(s: dict[str, Any], args: argparse.Namespace) -> None:
    def runs(key: str) -> str:
        return " / ".join(f"{r[key] * 10_000 / s['lines'] * 1000:.1f}" for r in s["runs"])

    loads = " / ".join(f"{r['load']:.1f}" for r in s["runs"])
    fam = s["families"]
    p = s["per10k"]
    body = "\n".join([
        "<!-- series_bench:begin -->",
        "## Delivery metrics: series and CPU per 10,000 log lines",
        "",
        f"`.venv/bin/python bench/series_bench.py --runs {args.runs} --write-results` on {s['when']} UTC, this "
        f"{s['cores']}-core machine (Python {s['python']}), shared with other work while it ran (1-minute load "
        f"average at the start of each run: {loads}).",
        "",
        f"{s['deliveries']:,} deliveries ({s['kinds']['sent']:,} sent, {s['kinds']['deferred']:,} deferred, "
        f"{s['kinds']['bounced']:,} bounced) to {s['domains']:,} distinct recipient domains over {len(IPS)} sending "
        f"IPs and their per-class transports, each after qmgr's `from=` line (3 sender domains' VERP senders and "
        f"strangers) and before its `removed` line: {s['lines']:,} log lines through `DeliveryBook.feed`, then "
        "`agent.delivery_metrics`.",
        "",
        f"Series in the textfile: **{s['series']}** in all; `sendfleet_delivery_total` "
        f"**{fam['sendfleet_delivery_total']}** = {len(IPS)} IPs × {s['providers']} classes (shipped, with other) × "
        f"3 statuses (asserted), `sendfleet_delivery_sender_domain_total` "
        f"**{fam['sendfleet_delivery_sender_domain_total']}** = (3 sender domains + other) × 3 (asserted), "
        f"`sendfleet_delivery_reason_total` {fam['sendfleet_delivery_reason_total']} (≤ reasons_top); none grows "
        f"with the recipients. Messages remembered in flight: {s['in_flight']:,} (the deferred ones).",
        "",
        "| CPU per 10,000 lines | runs (ms) | median |",
        "|---|---|---|",
        f"| `parse_delivery` alone (reference) | {runs('reference')} | **{p['reference'] * 1000:.1f} ms** |",
        f"| `parse_delivery` + `DeliveryBook.add` (delivery lines only) | {runs('add')} | "
        f"**{p['add'] * 1000:.1f} ms** |",
        f"| `DeliveryBook.feed` (+ qmgr envelopes and removals, sender domains) | {runs('feed')} | "
        f"**{p['feed'] * 1000:.1f} ms** |",
        "",
        f"feed / reference = **{p['feed'] / p['reference']:.2f}**, feed / (parse + add) = "
        f"**{p['feed'] / p['add']:.2f}**; one `delivery_metrics` render of the book: "
        f"{s['metrics_ms']:.1f} ms (median).",
        "<!-- series_bench:end -->",
        "",
    ])
    text = RESULTS.read_text(encoding="utf-8")
    if "<!-- series_bench:begin -->" in text:
        text = re.sub(r"<!-- series_bench:begin -->.*?<!-- series_bench:end -->\n?", lambda _: body, text,
                      flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(text, encoding="utf-8")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    raise SystemExit(main())
