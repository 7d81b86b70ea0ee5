"""What the shaper's policy answer costs smtpd at RCPT: the round trip of one request over a kept connection, as
Postfix's smtpd sends it, to the shaper (classification from its cache, pool, weighted choice among usable IPs,
FILTER answer) against a reference policy server in the same process that answers DUNNO without looking (the floor
of the protocol, sockets and Python's socketserver). Medians of several runs; p50 and p99 of each run's requests.

    python bench/shaper_policy.py [--runs 5] [--requests 20000] [--write-results]
"""

from __future__ import annotations

import argparse
import random
import socket
import socketserver
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from sendfleet.core import shaping  # noqa: E402
from sendfleet.monitor import shaper as sh  # noqa: E402

DOMAINS = [f"d{i}.test" for i in range(2000)]
CLASS_OF = {d: ("gmail", "yahoo", "outlook", "other")[i % 4] for i, d in enumerate(DOMAINS)}


class CachedClassifier:
    """Every domain already in the MX cache (the steady state of a sender)."""

    def __init__(self) -> None:
        self.classes: Any = None

    def classify(self, domain: str, now: float) -> str | None:
        return CLASS_OF.get(domain)


class DunnoHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            if raw.strip():
                continue
            self.wfile.write(b"action=DUNNO\n\n")
            self.wfile.flush()


def make_shaper(tmp: Path) -> sh.Shaper:
    classes = shaping.as_data(shaping.parse_classes(shaping.default_data()))
    members = [{"ip": f"198.51.100.{70 + i}", "pool": "transactional", "weight": 1 + i % 3, "warmup": {"warm": True}}
               for i in range(8)]
    data = {"host": "bench", "state_file": str(tmp / "state.json"), "textfile_dir": str(tmp), "members": members,
            "shaping": {"classes": classes, "sender_pools": {"shop.test": "transactional"},
                        "state_file": str(tmp / "shaping.json")}}
    return sh.Shaper(sh.ShaperConfig(data, "bench"), CachedClassifier(), random.Random(1))  # type: ignore[arg-type]


def run_once(address: tuple[str, int], requests: int) -> list[float]:
    out = []
    with socket.create_connection(address) as conn:
        f = conn.makefile("rwb")
        for i in range(requests):
            req = (f"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
                   f"client_address=198.51.100.32\nhelo_name=app.lab.test\nsender=app@shop.test\n"
                   f"recipient=u{i}@{DOMAINS[i % len(DOMAINS)]}\ninstance=bench.{i}\nsize=2048\n\n").encode()
            t0 = time.perf_counter()
            f.write(req)
            f.flush()
            f.readline()
            f.readline()
            out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shaper = make_shaper(Path(tmp))
        policy = sh._Server(("127.0.0.1", 0), sh._policy_handler(shaper))
        reference = sh._Server(("127.0.0.1", 0), DunnoHandler)
        for server in (policy, reference):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        rows: dict[str, list[tuple[float, float]]] = {"shaper": [], "reference": []}
        for _ in range(args.runs):
            for name, server in (("reference", reference), ("shaper", policy)):
                lat = sorted(run_once(server.server_address[:2], args.requests))  # type: ignore[index]
                rows[name].append((lat[len(lat) // 2], lat[int(len(lat) * 0.99)]))
        for server in (policy, reference):
            server.shutdown()
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
    ratio50 = med["shaper"][0] / med["reference"][0]
    ratio99 = med["shaper"][1] / med["reference"][1]
    line = (f"policy round trip, medians of {args.runs} runs x {args.requests} requests: shaper p50 "
            f"{med['shaper'][0] * 1e6:.0f} us, p99 {med['shaper'][1] * 1e6:.0f} us; reference (DUNNO) p50 "
            f"{med['reference'][0] * 1e6:.0f} us, p99 {med['reference'][1] * 1e6:.0f} us; "
            f"ratio p50 {ratio50:.2f}, p99 {ratio99:.2f}")
    print(line)
    if args.write_results:
        load = Path("/proc/loadavg").read_text().split()[:3]
        with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as out:
            out.write(
                f"\n## Shaper policy round trip ({time.strftime('%Y-%m-%d')}, load {' '.join(load)})\n\n"
                f"`python bench/shaper_policy.py --runs {args.runs} --requests {args.requests}`: one RCPT request "
                "as smtpd sends it, over a kept connection, to the shaper (shipped classes, 8 IPs, MX cache warm) "
                "and to a reference server in the same process that answers DUNNO without looking.\n\n"
                "| server | p50 | p99 |\n|---|---|---|\n"
                f"| shaper | {med['shaper'][0] * 1e6:.0f} µs | {med['shaper'][1] * 1e6:.0f} µs |\n"
                f"| reference (DUNNO) | {med['reference'][0] * 1e6:.0f} µs | {med['reference'][1] * 1e6:.0f} µs |\n"
                f"| ratio | {ratio50:.2f} | {ratio99:.2f} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
