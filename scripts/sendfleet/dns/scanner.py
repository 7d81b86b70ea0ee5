"""A bulk DNS scanner for blocklist queries: raw UDP sockets drained by the asyncio event loop.

Why not one `dns.asyncquery.udp` task per query: building and parsing every message with dnspython costs
~280 µs CPU (NXDOMAIN answers carry an SOA), which tops out near 2-3k queries/s. Here:

- queries arrive as prebuilt question wire bytes from a lazy iterator (nothing is created up front);
- a few connected non-blocking UDP sockets are read by `loop.add_reader` callbacks that drain every
  waiting datagram (no task, no future per query);
- an answer is matched by (socket, ID) and the echoed question; NXDOMAIN, NODATA and error rcodes are
  read from the 12-byte header; dnspython parses only answers that carry records (listings, TXT, PTR);
- a window of in-flight queries adapts to loss: it grows while answers come and halves once per loss event,
  never below `MIN_WINDOW` (rbldnsd keeps a ~208 KB receive buffer and drops bursts beyond ~100 in flight on
  loopback);
- lost queries are retried with exponential backoff (RTO from measured round trips, capped at `max_rto`),
  on the next resolver when there are several, for as long as their **deadline** allows: a question is
  given up (a timeout, "unknown") only when nothing answered it within `deadline` seconds of its first
  send, however many tries that took. Losses under load are paced, not counted: each loss event halves the
  window and backs the question off, so a busy server is asked less often until it keeps up again;
  a group (zone) that answered nothing at all during a whole deadline is silent: its other questions are
  given up at once, so a dead zone or resolver costs one deadline, not one per question;
  identical questions in flight are asked once;
- optional per-group (per-zone) rate limits with token buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sendfleet.core.resolvers import Resolver
from sendfleet.core.verdicts import NODATA, NXDOMAIN, RCODE_MALFORMED, TIMEOUT, Reply

#: One query: (question wire bytes, lower-case: QNAME + QTYPE + QCLASS; rate-limit group or -1; token).
Query = tuple[bytes, int, Any]
Deliver = Callable[[Any, Reply], None]

_HEADER = struct.Struct(">HHHHHH")
_FLAGS_RD = 0x0100

# In-flight entry fields (a list, mutated in place). _DEADLINE: when the current try is taken as lost;
# _EXPIRES: when the question is given up (first send + the scanner's deadline).
_Q, _GROUP, _TOKENS, _TRIES, _KEY, _DEADLINE, _SENT, _SEQ, _FAST, _OLD, _EXPIRES = range(11)

#: Default per-question deadline (seconds) and the longest wait for one try.
DEADLINE = 10.0
MAX_RTO = 1.0
#: At least this many timed tries fit in any deadline (the wait for one try is capped at deadline / this):
#: with a third of the datagrams lost at random, 0.36 ** 16 = 8e-8 of the questions would end unknown.
MIN_TRIES = 16

#: A query still unanswered when this many later-sent queries have been answered (and older than a few round
#: trips) is taken as lost and retried at once, as TCP's fast retransmit does: waiting for its timeout would
#: hold a slot of the window idle, and the drops come in bursts. A quarter of the window when that is less
#: (at least 3, TCP's duplicate ACKs), so that a window cut down by loss still repairs its losses this way.
REORDER = 16
#: The window is never cut below this: random loss (not congestion) cuts it at every round trip, and with
#: fewer in flight every loss would wait for its timeout. rbldnsd on loopback overflows beyond ~100.
MIN_WINDOW = 16
#: A question is resent by fast retransmit at most this many times; later losses wait for their timeout
#: (backed off), which keeps a question the server never answers from being resent at the pace of the others.
MAX_FAST = 8


@dataclass
class ScanStats:
    queries: int = 0  # distinct questions asked
    merged: int = 0  # identical questions answered by one query
    sent: int = 0  # datagrams sent (with retries)
    answers: int = 0
    retries: int = 0
    timeouts: int = 0  # questions without an answer within the deadline
    stray: int = 0  # datagrams that matched nothing in flight
    max_window: int = 0
    elapsed: float = 0.0
    per_resolver_answers: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.queries / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "merged": self.merged,
            "sent": self.sent,
            "answers": self.answers,
            "retries": self.retries,
            "timeouts": self.timeouts,
            "stray": self.stray,
            "max_window": self.max_window,
            "seconds": round(self.elapsed, 3),
            "queries_per_second": round(self.rate, 1),
        }


class BulkScanner:
    """Ask many questions of one or more resolvers, as fast as they answer, and deliver every outcome once."""

    def __init__(
        self,
        resolvers: Sequence[Resolver],
        *,
        deadline: float = DEADLINE,
        max_rto: float = MAX_RTO,
        sockets_per_resolver: int = 2,
        initial_window: int = 32,
        max_window: int = 1024,
        min_window: int = MIN_WINDOW,
        rates: Sequence[float | None] = (),
        min_rto: float = 0.05,
        decrease: float = 0.5,
        increase: float = 1.0,
    ) -> None:
        if not resolvers:
            raise ValueError("no resolver")
        if not deadline > 0:
            raise ValueError("the deadline must be positive")
        self.resolvers = list(resolvers)
        self.deadline = deadline
        self.max_rto = min(max_rto, deadline / MIN_TRIES)  # a try waits at most this long
        self.sockets_per_resolver = sockets_per_resolver
        self.window = float(initial_window)
        self.ssthresh = float(max_window)
        self.max_window = max_window
        self.min_window = min_window
        self.min_rto = min(min_rto, self.max_rto)
        self.decrease = decrease  # the window is multiplied by this once per loss event
        self.increase = increase  # and grows by this much per round trip after the first loss
        self.rates = list(rates)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.stats = ScanStats()
        self.completed = 0  # questions finished (answer or final timeout), for progress
        # per group (zone): when it last answered anything; the groups found silent (see _lost)
        self._heard: dict[int, float] = {}
        self._silent: set[int] = set()
        self._rto_base = min(1.0, self.max_rto)

    # -- public ------------------------------------------------------------------------------------------

    async def run(
        self,
        queries: Iterator[Query],
        deliver: Deliver,
        progress: Callable[[int], None] | None = None,
        *,
        nxdomain: tuple[bytearray, int] | None = None,
    ) -> ScanStats:
        """Ask every query; `deliver(token, reply)` once per query (timeouts included). Stats accumulate.

        With `nxdomain=(states, value)`, every token is an index into `states`, and an NXDOMAIN answer is
        recorded as `states[token] = value` instead of a call to `deliver` (the bulk scan: most answers)."""
        loop = asyncio.get_running_loop()
        self._nx_states: bytearray | None = nxdomain[0] if nxdomain is not None else None
        self._nx_value = nxdomain[1] if nxdomain is not None else 0
        self._progress = progress
        self._progress_at = 0.0
        self.completed = 0
        self._loop = loop
        self._deliver = deliver
        self._source: Iterator[Query] | None = queries
        self._inflight: dict[int, list[Any]] = {}
        self._by_question: dict[bytes, list[Any]] = {}
        self._merged: dict[bytes, list[Any]] = {}  # extra tokens of identical questions
        self._aliases: dict[int, list[Any]] = {}  # earlier IDs of questions sent again
        self._order: deque[tuple[int, list[Any]]] = deque()  # send order: timeouts and fast retransmits
        # tries after the first: (try deadline, seq, entry), so the backed-off and the last ones fire on time
        self._timers: list[tuple[float, int, list[Any]]] = []
        self._hi_seq = 0
        self._seq = 0
        self._deferred: dict[int, deque[Query]] = {}
        self._deferred_count = 0
        self._limited = any(self.rates)
        self._tokens = [1.0 if r else 0.0 for r in self.rates]
        self._token_time = time.monotonic()
        self._last_cut = 0.0
        self._prior_window = 0.0
        self._done: asyncio.Future[None] = loop.create_future()
        self._socks: list[tuple[socket.socket, int]] = []
        self._rr = 0
        self._ticker: asyncio.Handle | None = None
        start = time.monotonic()
        try:
            for ri, res in enumerate(self.resolvers):
                family = socket.AF_INET6 if ":" in res.address else socket.AF_INET
                for _ in range(self.sockets_per_resolver):
                    sock = socket.socket(family, socket.SOCK_DGRAM)
                    sock.setblocking(False)
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                    sock.connect((res.address, res.port))
                    si = len(self._socks)
                    self._socks.append((sock, ri))
                    loop.add_reader(sock.fileno(), self._drain, si)
            self._sends = [sock.send for sock, _ in self._socks]
            self._ticker = loop.call_soon(self._tick)
            self._pump()
            await self._done
        finally:
            if self._ticker is not None:
                self._ticker.cancel()
            for sock, _ in self._socks:
                loop.remove_reader(sock.fileno())
                sock.close()
            self.stats.elapsed += time.monotonic() - start
            if progress is not None:
                progress(self.completed)
        return self.stats

    # -- sending -----------------------------------------------------------------------------------------

    def _next_limited(self) -> Query | None:
        """The next query when some groups are rate-limited (token buckets) or waiting."""
        if self._deferred_count:
            self._refill(time.monotonic())
            for group, queue in self._deferred.items():
                if queue and self._tokens[group] >= 1.0:
                    self._tokens[group] -= 1.0
                    self._deferred_count -= 1
                    return queue.popleft()
        while self._source is not None and self._deferred_count < 4096:
            item = next(self._source, None)
            if item is None:
                self._source = None
                return None
            group = item[1]
            if 0 <= group < len(self.rates) and self.rates[group]:
                self._refill(time.monotonic())
                if self._tokens[group] >= 1.0 and not self._deferred.get(group):
                    self._tokens[group] -= 1.0
                    return item
                self._deferred.setdefault(group, deque()).append(item)
                self._deferred_count += 1
                continue
            return item
        return None

    def _refill(self, now: float) -> None:
        elapsed = now - self._token_time
        if elapsed <= 0:
            return
        self._token_time = now
        for group, rate in enumerate(self.rates):
            if rate:
                self._tokens[group] = min(max(1.0, rate / 10), self._tokens[group] + elapsed * rate)

    def _pump(self) -> None:
        """Fill the window with new questions. The hot path: one loop, no call per query but the send."""
        inflight = self._inflight
        window = self.window
        if len(inflight) >= window:
            return
        by_question = self._by_question
        aliases = self._aliases
        order_append = self._order.append
        sends = self._sends
        nsocks = len(sends)
        pack = _HEADER.pack
        getrandbits = random.getrandbits
        limited = self._limited
        silent = self._silent
        now = time.monotonic()
        deadline = now + self._rto_base
        expires = now + self.deadline
        seq = self._seq
        rr = self._rr
        fresh = 0
        while len(inflight) < window:
            if limited or self._deferred_count:
                item = self._next_limited()
            elif self._source is not None:
                item = next(self._source, None)
                if item is None:
                    self._source = None
            else:
                item = None
            if item is None:
                break
            if silent and item[1] in silent:  # its zone answers nothing: given up without asking
                self.stats.queries += 1
                self.stats.timeouts += 1
                self.completed += 1
                self._deliver(item[2], TIMEOUT)
                continue
            question = item[0]
            entry = by_question.get(question)
            if entry is not None:
                self._merged.setdefault(question, []).append(item[2])
                self.stats.merged += 1
                continue
            si = rr
            rr = rr + 1 if rr + 1 < nsocks else 0
            qid = getrandbits(16)
            key = (si << 16) | qid
            while key in inflight or key in aliases:
                qid = getrandbits(16)
                key = (si << 16) | qid
            seq += 1
            entry = [question, item[1], item[2], 1, key, deadline, now, seq, 0, None, expires]
            inflight[key] = entry
            by_question[question] = entry
            order_append((seq, entry))
            fresh += 1
            try:  # noqa: SIM105 (hot path)
                sends[si](pack(qid, _FLAGS_RD, 1, 0, 0, 0) + question)
            except OSError:
                pass  # a full send buffer or an ICMP error: the timeout will retry it
        self._seq = seq
        self._rr = rr
        self.stats.queries += fresh
        self.stats.sent += fresh
        if self._source is None and not inflight and not self._deferred_count and not self._done.done():
            self._done.set_result(None)

    def _send(self, entry: list[Any], now: float, fast: bool = False) -> None:
        """Send a question again (its earlier ID stays valid: a late answer to it is still taken)."""
        if fast:
            entry[_FAST] += 1
            tries = entry[_TRIES]
        else:
            tries = entry[_TRIES] = entry[_TRIES] + 1
        self.stats.retries += 1
        old = entry[_KEY]
        self._aliases[old] = entry
        if entry[_OLD] is None:
            entry[_OLD] = [old]
        else:
            entry[_OLD].append(old)
        if len(self.resolvers) > 1:  # a retry goes to the next resolver
            ri = (self._socks[old >> 16][1] + 1) % len(self.resolvers)
            si = ri * self.sockets_per_resolver + random.randrange(self.sockets_per_resolver)
        else:
            si = old >> 16
        inflight = self._inflight
        aliases = self._aliases
        qid = random.getrandbits(16)
        key = (si << 16) | qid
        while key in inflight or key in aliases:
            qid = random.getrandbits(16)
            key = (si << 16) | qid
        # exponential backoff, capped; never past the question's deadline (then it is given up, on time)
        rto = min(self.max_rto, self._rto_base * (1 << min(tries - 1, 16)))
        due = min(now + rto, entry[_EXPIRES])
        entry[_KEY] = key
        entry[_DEADLINE] = due
        entry[_SENT] = now
        inflight[key] = entry
        self._seq = seq = self._seq + 1
        entry[_SEQ] = seq
        self._order.append((seq, entry))
        heapq.heappush(self._timers, (due, seq, entry))
        try:  # noqa: SIM105 (hot path)
            self._sends[si](_HEADER.pack(qid, _FLAGS_RD, 1, 0, 0, 0) + entry[_Q])
        except OSError:
            pass  # a full send buffer or an ICMP error: the timeout will retry it
        self.stats.sent += 1

    # -- receiving ---------------------------------------------------------------------------------------

    def _drain(self, si: int) -> None:
        sock = self._socks[si][0]
        recv = sock.recv
        inflight = self._inflight
        by_question = self._by_question
        aliases = self._aliases
        merged = self._merged
        deliver = self._deliver
        nx_states = self._nx_states
        nx_value = self._nx_value
        base = si << 16
        got = 0
        hi_seq = self._hi_seq
        heard = self._heard
        now = time.monotonic()
        sample: list[Any] | None = None
        while True:
            try:
                data = recv(4096)
            except BlockingIOError:
                break
            except OSError:
                continue  # e.g. ECONNREFUSED from an earlier ICMP port unreachable
            if len(data) < 12:
                self.stats.stray += 1
                continue
            key = base | (data[0] << 8) | data[1]
            entry = inflight.get(key)
            alias = False
            if entry is None:
                entry = aliases.get(key) if aliases else None
                if entry is None or by_question.get(entry[_Q]) is not entry:
                    self.stats.stray += 1
                    continue
                alias = True  # a late answer to an earlier try: as good as any
                if self._prior_window > self.window:
                    # that try was slow, not lost (a resolver answers cached names first): undo the last cut
                    self.window = self.ssthresh = self._prior_window
                    self._prior_window = 0.0
            if not data[2] & 0x80:
                self.stats.stray += 1
                continue
            question = entry[_Q]
            echoed = data[12 : 12 + len(question)]
            if echoed != question and echoed.lower() != question:
                self.stats.stray += 1
                continue
            del inflight[entry[_KEY] if alias else key]
            del by_question[question]
            if entry[_OLD] is not None:
                for old in entry[_OLD]:
                    aliases.pop(old, None)
            got += 1
            heard[entry[_GROUP]] = now
            if entry[_SEQ] > hi_seq:
                hi_seq = entry[_SEQ]
                if sample is None and entry[_TRIES] == 1 and not entry[_FAST]:
                    sample = entry
            rcode = data[3] & 0x0F
            if rcode == 3:
                if nx_states is not None:
                    nx_states[entry[_TOKENS]] = nx_value
                    if merged:
                        for token in merged.pop(question, ()):
                            nx_states[token] = nx_value
                    continue
                reply = NXDOMAIN
            elif rcode == 0:
                reply = NODATA if data[6] == 0 and data[7] == 0 else _parse(data, question)
            else:
                reply = _rcode_reply(rcode)
            deliver(entry[_TOKENS], reply)
            if merged:
                for token in merged.pop(question, ()):
                    deliver(token, reply)
        if got:
            if sample is not None:
                self._sample(now - sample[_SENT])
            self.completed += got
            self._hi_seq = hi_seq
            self._fast_retransmit()
            self.stats.answers += got
            if self.window < self.ssthresh:
                self.window = min(self.max_window, self.window + got)
            else:
                self.window = min(self.max_window, self.window + self.increase * got / self.window)
            if self.window > self.stats.max_window:
                self.stats.max_window = int(self.window)
            self._pump()

    def _fast_retransmit(self) -> None:
        order = self._order
        limit = self._hi_seq - max(3, min(REORDER, int(self.window) >> 2))
        if not order or order[0][0] >= limit:
            return
        inflight = self._inflight
        now = time.monotonic()
        min_age = max(3 * (self.srtt or 0.0), 0.005)
        cut = False
        steps = len(order)  # each entry looked at once per call (an exhausted one goes to the back)
        while order and order[0][0] < limit and steps > 0:
            steps -= 1
            seq, entry = order[0]
            if entry[_SEQ] != seq or inflight.get(entry[_KEY]) is not entry:
                order.popleft()  # answered, or already sent again
                continue
            if now - entry[_SENT] < min_age:
                break  # too young to call lost (and every later one is younger)
            order.popleft()
            if entry[_FAST] >= MAX_FAST:
                order.append((seq, entry))  # resent often enough: it waits for its timeout, behind the others
                continue
            del inflight[entry[_KEY]]
            if entry[_SENT] > self._last_cut:
                cut = True
            self._send(entry, now, fast=True)
        if cut:
            self._cut(now)

    def _cut(self, now: float) -> None:
        self._last_cut = now
        self._prior_window = self.window
        self.ssthresh = max(float(self.min_window), self.window * self.decrease)
        self.window = self.ssthresh

    def _sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self._rto_base = min(self.max_rto, max(self.min_rto, self.srtt + 4 * self.rttvar))

    # -- timers ------------------------------------------------------------------------------------------

    def _tick(self) -> None:
        """Every 5 ms: lost tries (first tries in send order, later ones by their timer), questions past their
        deadline, rate-limit refills, progress."""
        # losses found by later answers, even when none came since the last drain: a window full of lost
        # queries would otherwise wait for their timeouts
        self._fast_retransmit()
        now = time.monotonic()
        order = self._order
        inflight = self._inflight
        cut = False
        while order:  # first tries: due in send order (a late one is found a little late)
            seq, entry = order[0]
            if entry[_SEQ] != seq or inflight.get(entry[_KEY]) is not entry:
                order.popleft()
                continue
            if entry[_DEADLINE] > now:
                if entry[_TRIES] == 1:
                    break
                order.popleft()  # a backed-off try: its timer fires it; it must not hold up the first tries
                continue
            order.popleft()
            cut = self._lost(entry, now) or cut
        timers = self._timers
        while timers and timers[0][0] <= now:  # later tries, backed off: each on time
            _due, seq, entry = heapq.heappop(timers)
            if entry[_SEQ] == seq and inflight.get(entry[_KEY]) is entry:
                cut = self._lost(entry, now) or cut
        if cut:
            self._cut(now)
        self._pump()
        if self._progress is not None and now - self._progress_at > 0.1:
            self._progress_at = now
            self._progress(self.completed)
        if not self._done.done():
            self._ticker = self._loop.call_later(0.005, self._tick)

    def _lost(self, entry: list[Any], now: float) -> bool:
        """A try went unanswered: send it again, or give the question up when its deadline has come.
        True when this loss is a new loss event (sent after the last window cut)."""
        new_event = bool(entry[_SENT] > self._last_cut)
        if now < entry[_EXPIRES]:
            del self._inflight[entry[_KEY]]
            self._send(entry, now)
            return new_event
        self._give_up(entry)
        group = entry[_GROUP]
        if self._heard.get(group, -1.0) < entry[_EXPIRES] - self.deadline:
            # its zone answered nothing at all during its whole deadline: the zone (or the resolver) is
            # silent, so its other questions are given up now rather than each after a deadline of its own
            self._silence(group)
        return new_event

    def _give_up(self, entry: list[Any]) -> None:
        """No answer within the deadline: the question ends as a timeout (unknown, never clean)."""
        self._inflight.pop(entry[_KEY], None)
        question = entry[_Q]
        del self._by_question[question]
        for old in entry[_OLD] or ():
            self._aliases.pop(old, None)
        self.stats.timeouts += 1
        self.completed += 1
        self._deliver(entry[_TOKENS], TIMEOUT)
        for token in self._merged.pop(question, ()):
            self._deliver(token, TIMEOUT)

    def _silence(self, group: int) -> None:
        self._silent.add(group)
        for entry in [e for e in self._inflight.values() if e[_GROUP] == group]:
            self._give_up(entry)
        for item in self._deferred.pop(group, ()):
            self._deferred_count -= 1
            self.stats.queries += 1
            self.stats.timeouts += 1
            self.completed += 1
            self._deliver(item[2], TIMEOUT)


_RCODE_REPLIES: dict[int, Reply] = {}


def _rcode_reply(rcode: int) -> Reply:
    reply = _RCODE_REPLIES.get(rcode)
    if reply is None:
        reply = _RCODE_REPLIES[rcode] = Reply(rcode)
    return reply


def _plain_records(data: bytes, start: int, qtype: int) -> tuple[str, ...] | None:
    """A or TXT records of a plain answer (no CNAME, no surprises), or None to let dnspython parse it."""
    count = (data[6] << 8) | data[7]
    pos = start
    out: list[str] = []
    size = len(data)
    try:
        for _ in range(count):
            if data[pos] & 0xC0 == 0xC0:
                pos += 2
            else:
                while data[pos]:
                    if data[pos] & 0xC0:
                        return None
                    pos += data[pos] + 1
                pos += 1
            rtype = (data[pos] << 8) | data[pos + 1]
            rdlen = (data[pos + 8] << 8) | data[pos + 9]
            pos += 10
            end = pos + rdlen
            if rtype != qtype or end > size:
                return None
            if qtype == 1:
                if rdlen != 4:
                    return None
                out.append(f"{data[pos]}.{data[pos + 1]}.{data[pos + 2]}.{data[pos + 3]}")
            else:
                parts = []
                while pos < end:
                    length = data[pos]
                    if pos + 1 + length > end:
                        return None
                    parts.append(data[pos + 1 : pos + 1 + length])
                    pos += 1 + length
                out.append(b"".join(parts).decode("utf-8", "replace"))
            pos = end
    except IndexError:
        return None
    return tuple(out)


def _parse(data: bytes, question: bytes) -> Reply:
    """An answer with records. Plain A and TXT answers (a listing and its reason) are read directly;
    anything else (PTR, CNAME chains, odd answers) is parsed by dnspython. Records of the asked type, as text."""
    qtype = int.from_bytes(question[-4:-2], "big")
    truncated = bool(data[2] & 0x02)
    if qtype in (1, 16) and not truncated:
        plain = _plain_records(data, 12 + len(question), qtype)
        if plain is not None:
            return Reply(0, plain)
    import dns.message  # only for odd answers: dnspython costs start-up time
    import dns.rdatatype

    try:
        message = dns.message.from_wire(data, ignore_trailing=True)
    except Exception:  # dnspython raises many kinds of errors for malformed input
        return Reply(RCODE_MALFORMED, truncated=truncated)
    records: list[str] = []
    for rrset in message.answer:
        if rrset.rdtype != qtype:
            continue
        for rdata in rrset:
            if rrset.rdtype == dns.rdatatype.TXT:
                records.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            elif rrset.rdtype == dns.rdatatype.PTR:
                records.append(rdata.target.to_text(omit_final_dot=True))
            else:
                records.append(rdata.to_text())
    return Reply(0, tuple(records), truncated)


def run_scan(scanner: BulkScanner, queries: Iterator[Query], deliver: Deliver) -> ScanStats:
    """Run one scan to completion on a fresh event loop."""
    return asyncio.run(scanner.run(queries, deliver))
