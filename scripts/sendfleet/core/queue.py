"""Postfix's queue from `postqueue -j`: counts per queue, the oldest message per queue, and the deferred
messages per provider class. Pure: lines in, a summary out.

`postqueue -j` prints one JSON object per message and line::

    {"queue_name": "deferred", "queue_id": "4Q2...", "arrival_time": 1764730000, "message_size": 1234,
     "sender": "b+a=gmail.test@bounces.shop.test",
     "recipients": [{"address": "a@gmail.test", "delay_reason": "host mx... said: 421 ..."}]}

The provider class of a recipient domain is not in the queue: the caller passes what it knows (a cache of
MX classifications, see `sendfleet.monitor.agent`); a domain it does not know counts as `other`, so the
labels stay bounded by the configured classes whatever the recipients.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from sendfleet.core import poolmap

QUEUES = ("active", "deferred", "hold", "incoming", "maildrop")


@dataclass(frozen=True)
class QueuedMessage:
    queue: str  # one of QUEUES
    queue_id: str
    arrival: float  # Unix seconds
    size: int
    sender: str
    recipients: tuple[str, ...]  # addresses still to deliver

    @property
    def domains(self) -> tuple[str, ...]:
        """The recipient domains (lower case, each once, in order)."""
        out = dict.fromkeys(r.rsplit("@", 1)[1].lower() for r in self.recipients if "@" in r)
        return tuple(out)


@dataclass(frozen=True)
class QueueSummary:
    messages: Mapping[str, int]  # queue -> messages (every queue of QUEUES)
    oldest_seconds: Mapping[str, float]  # queue -> age of its oldest message (0 when empty)
    deferred_by_provider: Mapping[str, int]  # class -> deferred messages with a recipient of that class
    unreadable: int  # lines that were not a queue entry


def parse_line(line: str) -> QueuedMessage | None:
    """One line of `postqueue -j` -> the message; None for a blank line or one that is not a queue entry."""
    text = line.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    queue = data.get("queue_name")
    if queue not in QUEUES:
        return None
    try:
        arrival = float(data.get("arrival_time", 0))
        size = int(data.get("message_size", 0))
    except (TypeError, ValueError):
        return None
    recipients = tuple(
        str(r["address"]) for r in data.get("recipients") or [] if isinstance(r, dict) and r.get("address")
    )
    return QueuedMessage(str(queue), str(data.get("queue_id", "")), arrival, size, str(data.get("sender", "")),
                         recipients)


def parse(lines: Iterable[str]) -> tuple[list[QueuedMessage], int]:
    """Every message of `postqueue -j`'s output, and how many non-blank lines could not be read."""
    messages: list[QueuedMessage] = []
    bad = 0
    for line in lines:
        message = parse_line(line)
        if message is not None:
            messages.append(message)
        elif line.strip():
            bad += 1
    return messages, bad


def deferred_domains(messages: Iterable[QueuedMessage]) -> list[str]:
    """The recipient domains of the deferred messages, the most frequent first (the order to classify them in
    when only some lookups fit in a run)."""
    counts = Counter(d for m in messages if m.queue == "deferred" for d in m.domains)
    return [d for d, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def summarise(
    messages: Iterable[QueuedMessage],
    now: float,
    domain_classes: Mapping[str, str],
    classes: Collection[str],
    unreadable: int = 0,
) -> QueueSummary:
    """Counts per queue, the oldest message's age per queue, and per provider class the deferred messages that
    have a recipient of the class (a message to two classes counts once in each). `domain_classes`: recipient
    domain -> class; a domain missing from it, or mapped to a class not in `classes`, counts as `other`."""
    known = set(classes) | {poolmap.OTHER_CLASS}
    counts = dict.fromkeys(QUEUES, 0)
    oldest = dict.fromkeys(QUEUES, 0.0)
    by_provider = dict.fromkeys(sorted(known), 0)
    for m in messages:
        counts[m.queue] += 1
        oldest[m.queue] = max(oldest[m.queue], max(0.0, now - m.arrival))
        if m.queue == "deferred":
            seen = {
                k if (k := domain_classes.get(d, poolmap.OTHER_CLASS)) in known else poolmap.OTHER_CLASS
                for d in m.domains
            } or {poolmap.OTHER_CLASS}
            for klass in seen:
                by_provider[klass] += 1
    return QueueSummary(counts, oldest, by_provider, unreadable)
