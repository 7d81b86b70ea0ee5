"""Provider classes, reply rules and the state of each (sending IP, provider class) path. Pure: data in, decisions
out. One home for these rules: the inventory model validates with `parse_classes`, the postfix role writes its
per-class transports from the parsed classes (plugins/filter/sendfleet_shaping.py), the shaper on each sender
(sendfleet.monitor.shaper) classifies, chooses and reacts with the functions below, and `sendfleet shaping` shows
the same state.

- A **provider class** (Gmail, Yahoo, Microsoft, ...) is recognised by the MX hosts of a recipient domain: the class
  whose suffix matches an MX host (`classify`), so a Google Workspace or Microsoft 365 custom domain lands with its
  provider. `other` holds everything else.
- Each class has **limits per sending IP** (`Limits`): connections, messages per connection (Postfix: the maxproc and
  reuse count of the (IP, class) transport), messages per minute and per hour (the shaper: a sliding window per path).
- **Rules** match a reply (code, enhanced status code, text regex; every given part must match) and act on the path
  that received it: `throttle` (the rule's limits for a duration), `suspend` (no new mail on that path for a duration:
  the pool's other IPs take it) or `drain` (the IP leaves every pool, through the DNSBL monitor's drain machinery).
- `choose` picks the IP for one message: a weighted draw among the pool's IPs that are usable for the class (not
  drained, not suspended, under their rate and their warm-up cap). `react` turns a matched reply into a new path
  state, refusing (loudly) to suspend the last usable IP of a pool for a class, the rule the drain follows.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

OTHER = "other"
ACTIONS = ("throttle", "suspend", "drain")
LIMIT_KEYS = ("connections", "messages_per_connection", "messages_per_minute", "messages_per_hour")
THROTTLE_KEYS = ("connections", "messages_per_minute", "messages_per_hour")  # what a throttle can lower
CLASS_KEYS = ("description", "mx_suffixes", "limits", "warmup_share", "sources", "rules")
RULE_KEYS = ("name", "code", "enhanced", "text", "action", "duration", "limits", "source")

_CLASS_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}\Z")
_RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\Z")
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_OPTIONAL_LIMITS = ("messages_per_minute", "messages_per_hour")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SUFFIX = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class ShapingError(ValueError):
    """Bad provider-class data; the message names the key (e.g. `provider_classes.gmail.rules[2].text`)."""


# ---------------------------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class Limits:
    connections: int
    messages_per_connection: int
    messages_per_minute: int | None = None
    messages_per_hour: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in LIMIT_KEYS}


@dataclass(frozen=True)
class Rule:
    name: str
    action: str  # throttle | suspend | drain
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None  # a Python regex, searched
    duration: int | None = None  # seconds (throttle, suspend)
    limits: Mapping[str, int | None] = field(default_factory=dict)  # throttle: the limits in force meanwhile
    source: str = ""

    def matches(self, code: int | None, enhanced: str | None, text: str) -> bool:
        if self.code is not None and code != self.code:
            return False
        if self.enhanced is not None and enhanced != self.enhanced:
            return False
        return self.text is None or _compiled(self.text).search(text) is not None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "action": self.action, "code": self.code, "enhanced": self.enhanced,
                "text": self.text, "duration": self.duration, "limits": dict(self.limits), "source": self.source}


@dataclass(frozen=True)
class ProviderClass:
    name: str
    description: str
    mx_suffixes: tuple[str, ...]
    limits: Limits
    warmup_share: float
    rules: tuple[Rule, ...]
    sources: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "mx_suffixes": list(self.mx_suffixes), "limits": self.limits.as_dict(),
                "warmup_share": self.warmup_share, "rules": [r.as_dict() for r in self.rules],
                "sources": dict(self.sources)}


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE[pattern] = re.compile(pattern)
    return rx


def parse_duration(value: Any, where: str) -> int:
    """'90s', '15m', '1h', '2d' or a number of seconds -> seconds (>= 1)."""
    if isinstance(value, bool):
        raise ShapingError(f"{where}: expected a duration such as 15m, 1h or 2d, got {value!r}")
    if isinstance(value, int):
        seconds = value
    else:
        m = _DURATION.match(str(value).strip().lower())
        if not m:
            raise ShapingError(f"{where}: expected a duration such as 15m, 1h or 2d, got {value!r}")
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds < 1:
        raise ShapingError(f"{where}: a duration must be at least 1s, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    s = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _count(value: Any, where: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        what = "a whole number >= 1" + (" or null" if optional else "")
        raise ShapingError(f"{where}: expected {what}, got {value!r}")
    if value < 1:
        raise ShapingError(f"{where}: must be >= 1, got {value}")
    return value


def _limits(raw: Any, where: str, base: Limits | None) -> Limits:
    if not isinstance(raw, Mapping):
        raise ShapingError(f"{where}: expected a mapping of {', '.join(LIMIT_KEYS)}, got {type(raw).__name__}")
    for key in raw:
        if key not in LIMIT_KEYS:
            raise ShapingError(f"{where}.{key}: unknown limit (known: {', '.join(LIMIT_KEYS)})")
    values: dict[str, int | None] = dict(base.as_dict()) if base else {}
    for key in LIMIT_KEYS:
        if key in raw:
            values[key] = _count(raw[key], f"{where}.{key}", optional=key in _OPTIONAL_LIMITS)
        elif key not in values:
            if key in ("connections", "messages_per_connection"):
                raise ShapingError(f"{where}.{key}: required")
            values[key] = None
    return Limits(int(values["connections"] or 0), int(values["messages_per_connection"] or 0),
                  values["messages_per_minute"], values["messages_per_hour"])


def _rule(raw: Any, where: str, *, with_class: bool = False) -> Rule:
    if not isinstance(raw, Mapping):
        raise ShapingError(f"{where}: expected a mapping (name, action and code/enhanced/text), got {raw!r}")
    known = (*RULE_KEYS, "class") if with_class else RULE_KEYS
    for key in raw:
        if key not in known:
            hint = " (a class's own rule acts on that class)" if key == "class" else ""
            raise ShapingError(f"{where}.{key}: unknown key{hint} (known: {', '.join(known)})")
    name = str(raw.get("name") or "")
    if not _RULE_NAME.match(name):
        raise ShapingError(f"{where}.name: expected lowercase letters, digits and '-', got {raw.get('name')!r}")
    action = raw.get("action")
    if action not in ACTIONS:
        raise ShapingError(f"{where}.action: expected one of {', '.join(ACTIONS)}, got {action!r}")
    code = raw.get("code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int) or not 200 <= code <= 599):
        raise ShapingError(f"{where}.code: expected an SMTP reply code 200-599, got {code!r}")
    enhanced = raw.get("enhanced")
    if enhanced is not None:
        enhanced = str(enhanced)
        if not _ENHANCED.match(enhanced):
            raise ShapingError(f"{where}.enhanced: expected an enhanced status code such as 4.7.28, got {enhanced!r}")
    text = raw.get("text")
    if text is not None:
        text = str(text)
        try:
            _compiled(text)
        except re.error as err:
            raise ShapingError(f"{where}.text: the regex does not compile: {err}") from None
    if code is None and enhanced is None and text is None:
        raise ShapingError(f"{where}: a rule needs at least one of code, enhanced or text")
    duration = raw.get("duration")
    if action == "drain":
        if duration is not None:
            raise ShapingError(f"{where}.duration: a drain has no duration (the DNSBL monitor's restore rules end it)")
        seconds = None
    else:
        if duration is None:
            raise ShapingError(f"{where}.duration: required for {action}")
        seconds = parse_duration(duration, f"{where}.duration")
    limits: dict[str, int | None] = {}
    if raw.get("limits") is not None:
        if action != "throttle":
            raise ShapingError(f"{where}.limits: only a throttle has limits")
        lraw = raw["limits"]
        if not isinstance(lraw, Mapping) or not lraw:
            raise ShapingError(f"{where}.limits: expected a mapping of {', '.join(LIMIT_KEYS)}")
        for key, value in lraw.items():
            if key not in LIMIT_KEYS:
                raise ShapingError(f"{where}.limits.{key}: unknown limit (known: {', '.join(LIMIT_KEYS)})")
            if key == "messages_per_connection":
                raise ShapingError(f"{where}.limits.{key}: a throttle cannot change it (Postfix reads it from "
                                   "master.cf); throttle connections, messages_per_minute or messages_per_hour")
            limits[key] = _count(value, f"{where}.limits.{key}", optional=False)
    elif action == "throttle":
        raise ShapingError(f"{where}.limits: a throttle needs the limits in force while it lasts "
                           "(e.g. {messages_per_minute: 10})")
    return Rule(name, str(action), code, enhanced, text, seconds, limits, str(raw.get("source") or ""))


def _suffixes(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ShapingError(f"{where}: expected a list of MX host suffixes, got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        value = str(item).strip().lower().rstrip(".")
        if not _SUFFIX.match(value):
            raise ShapingError(f"{where}[{i}]: not a host name suffix: {item!r}")
        out.append(value)
    return tuple(out)


def merge(default: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """The inventory's `provider_classes` over the shipped default: class by class, key by key (limits key by key);
    a class set to null is removed; a class's `rules`, `mx_suffixes` and `sources` given in the inventory replace
    the default's."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in default.items()}
    for name, spec in (override or {}).items():
        if spec is None:
            out.pop(name, None)
            continue
        base = out.get(name)
        if not isinstance(spec, Mapping) or not isinstance(base, Mapping):
            out[name] = spec
            continue
        merged = dict(base)
        for key, value in spec.items():
            if key == "limits" and isinstance(value, Mapping) and isinstance(base.get("limits"), Mapping):
                merged["limits"] = {**base["limits"], **value}
            else:
                merged[key] = value
        out[name] = merged
    return out


def parse_classes(raw: Any, where: str = "provider_classes", rules: Any = None,
                  rules_where: str = "shaping_rules") -> dict[str, ProviderClass]:
    """Validate merged provider-class data (see `merge`) -> {name: ProviderClass}, `other` last. `rules`: extra
    rules, each naming its `class`, matched before that class's own (the inventory's `shaping_rules`). Raises
    ShapingError naming the key of the first problem."""
    if not isinstance(raw, Mapping):
        raise ShapingError(f"{where}: expected a mapping of class name -> class, got {type(raw).__name__}")
    extra: dict[str, list[tuple[Rule, str]]] = {}  # class -> (rule, its key)
    if rules is not None and not isinstance(rules, list | tuple):
        raise ShapingError(f"{rules_where}: expected a list of rules, each with its class, got {rules!r}")
    for i, r in enumerate(rules or ()):
        rw = f"{rules_where}[{i}]"
        klass = r.get("class") if isinstance(r, Mapping) else None
        if not isinstance(klass, str) or klass not in raw or raw.get(klass) is None:
            known = ", ".join(sorted(str(n) for n in raw if raw[n] is not None))
            raise ShapingError(f"{rw}.class: unknown provider class {klass!r} (known: {known})")
        extra.setdefault(str(klass), []).append((_rule(r, rw, with_class=True), rw))
    if OTHER not in raw or not isinstance(raw[OTHER], Mapping):
        raise ShapingError(f"{where}.{OTHER}: required (the limits and rules of every destination no class claims)")
    other_limits = _limits(raw[OTHER].get("limits", {}), f"{where}.{OTHER}.limits", None)
    out: dict[str, ProviderClass] = {}
    owner: dict[str, str] = {}
    for name in sorted(raw, key=lambda n: (n == OTHER, str(n))):
        spec = raw[name]
        w = f"{where}.{name}"
        if not isinstance(name, str) or not _CLASS_NAME.match(name):
            raise ShapingError(f"{where}: {name!r} is not a class name (1-16 lowercase letters and digits, "
                               "starting with a letter)")
        if not isinstance(spec, Mapping):
            raise ShapingError(f"{w}: expected a mapping ({', '.join(CLASS_KEYS)}), got {spec!r}")
        for key in spec:
            if key not in CLASS_KEYS:
                raise ShapingError(f"{w}.{key}: unknown key (known: {', '.join(CLASS_KEYS)})")
        suffixes = _suffixes(spec.get("mx_suffixes"), f"{w}.mx_suffixes")
        if name != OTHER and not suffixes:
            raise ShapingError(f"{w}.mx_suffixes: a provider class needs at least one MX host suffix")
        if name == OTHER and suffixes:
            raise ShapingError(f"{w}.mx_suffixes: `other` is what no class claims; it has no suffixes")
        for i, s in enumerate(suffixes):
            if s in owner:
                raise ShapingError(f"{w}.mx_suffixes[{i}]: {s} is already a suffix of class {owner[s]}")
            owner[s] = name
        limits = _limits(spec.get("limits", {}), f"{w}.limits", None if name == OTHER else other_limits)
        share = spec.get("warmup_share", 1.0)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < float(share) <= 1:
            raise ShapingError(f"{w}.warmup_share: expected a number in (0, 1], got {share!r}")
        rules_raw = spec.get("rules") or []
        if not isinstance(rules_raw, list | tuple):
            raise ShapingError(f"{w}.rules: expected a list of rules, got {rules_raw!r}")
        placed = [*extra.get(name, ()), *((_rule(r, f"{w}.rules[{i}]"), f"{w}.rules[{i}]")
                                          for i, r in enumerate(rules_raw))]
        seen: set[str] = set()
        for rule, rw in placed:
            if rule.name in seen:
                raise ShapingError(f"{rw}.name: {rule.name} is already the name of another rule of {name}")
            seen.add(rule.name)
        rules = tuple(rule for rule, _ in placed)
        sources = spec.get("sources") or {}
        if not isinstance(sources, Mapping):
            raise ShapingError(f"{w}.sources: expected a mapping of what -> where it comes from")
        out[name] = ProviderClass(name, str(spec.get("description") or name), suffixes, limits, float(share), rules,
                                  {str(k): str(v) for k, v in sources.items()})
    return out


def as_data(classes: Mapping[str, ProviderClass]) -> dict[str, Any]:
    """Parsed classes -> plain data (for Ansible and the agent's config); `parse_classes(as_data(c)) == c`."""
    out = {}
    for name, c in classes.items():
        d = c.as_dict()
        d["rules"] = [_rule_data(r) for r in c.rules]
        out[name] = d
    return out


def _rule_data(r: Rule) -> dict[str, Any]:
    d: dict[str, Any] = {"name": r.name, "action": r.action}
    for key in ("code", "enhanced", "text"):
        if getattr(r, key) is not None:
            d[key] = getattr(r, key)
    if r.duration is not None:
        d["duration"] = r.duration
    if r.limits:
        d["limits"] = dict(r.limits)
    if r.source:
        d["source"] = r.source
    return d


# ------------------------------------------------------------------------------------------ classification


def classify(mx_hosts: Iterable[str], classes: Mapping[str, ProviderClass]) -> str:
    """The class of a recipient domain from its MX hosts: the class owning the longest suffix that matches the
    MX host of best preference that matches any (hosts in preference order); `other` when none does."""
    suffixes = sorted(((s, c.name) for c in classes.values() for s in c.mx_suffixes), key=lambda x: -len(x[0]))
    for host in mx_hosts:
        h = str(host).lower().rstrip(".")
        for suffix, name in suffixes:
            if h == suffix or h.endswith("." + suffix):
                return name
    return OTHER


def rules_for(classes: Mapping[str, ProviderClass], klass: str) -> tuple[Rule, ...]:
    """The reply rules for a reply from provider class `klass`, in the order they are tried: the class's own, then
    `other`'s generic ones (a blocklist named in the text, a rate limit); a class not configured has `other`'s."""
    own = classes[klass].rules if klass in classes else ()
    generic = classes[OTHER].rules if klass != OTHER and OTHER in classes else ()
    return (*own, *generic)


def match_rule(rules: Sequence[Rule], code: int | None, enhanced: str | None, text: str) -> Rule | None:
    """The first rule of `rules` that the reply matches."""
    for rule in rules:
        if rule.matches(code, enhanced, text):
            return rule
    return None


# ----------------------------------------------------------------------------------------- path state


NORMAL = "normal"
THROTTLED = "throttled"
SUSPENDED = "suspended"
_STATUS_OF = {"throttle": THROTTLED, "suspend": SUSPENDED}  # the status a rule's action sets


@dataclass(frozen=True)
class PathState:
    """One (IP, class) path. `status` normal | throttled | suspended; `until` (Unix seconds) ends it."""

    ip: str
    klass: str
    status: str = NORMAL
    until: float | None = None
    since: float | None = None
    rule: str | None = None
    reply: str | None = None
    limits: Mapping[str, int | None] = field(default_factory=dict)  # throttle limits in force
    by: str = "rule"  # rule | operator
    blocked: bool = False  # a suspension that was refused: the last usable IP of its pool for the class

    def active(self, now: float) -> bool:
        return self.status != NORMAL and (self.until is None or now < self.until)

    def as_dict(self) -> dict[str, Any]:
        return {"ip": self.ip, "class": self.klass, "status": self.status, "until": self.until, "since": self.since,
                "rule": self.rule, "reply": self.reply, "limits": dict(self.limits), "by": self.by,
                "blocked": self.blocked}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathState:
        status = str(data.get("status", NORMAL))
        return cls(str(data["ip"]), str(data["class"]), status if status in (NORMAL, THROTTLED, SUSPENDED) else NORMAL,
                   _float(data.get("until")), _float(data.get("since")), data.get("rule"), data.get("reply"),
                   {str(k): v for k, v in (data.get("limits") or {}).items()}, str(data.get("by", "rule")),
                   bool(data.get("blocked", False)))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Event:
    """What happened to a path, for the journal, the state file's history and the metrics."""

    kind: str  # throttle | suspend | drain | blocked | resume | expire
    ip: str
    klass: str
    reason: str
    rule: str | None = None
    reply: str | None = None
    until: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "ip": self.ip, "class": self.klass, "reason": self.reason, "rule": self.rule,
                "reply": self.reply, "until": self.until}

    def message(self) -> str:
        head = f"{self.kind} {self.ip} for class {self.klass}: {self.reason}"
        return head + (f" [reply: {self.reply}]" if self.reply else "")


def key(ip: str, klass: str) -> str:
    return f"{ip} {klass}"


def react(
    states: Mapping[str, PathState],
    ip: str,
    klass: str,
    rule: Rule,
    reply: str,
    now: float,
    pool_ips: Sequence[str],
    usable: Mapping[str, bool],
    suspend_last: bool = False,
) -> tuple[dict[str, PathState], Event]:
    """Apply `rule` (matched by `reply` on the (ip, klass) path). `pool_ips`: the IPs of that IP's pool on this
    host; `usable`: whether each is usable for the class right now (not drained, not suspended). Returns the new
    states and what happened. A drain is only reported here (the drain machinery applies it). A suspension of the
    last usable IP of the pool for the class is refused (`blocked`) unless `suspend_last`: mail keeps flowing and
    the event says so."""
    out = dict(states)
    k = key(ip, klass)
    old = states.get(k) or PathState(ip, klass)
    short = reply if len(reply) <= 300 else reply[:297] + "..."
    if rule.action == "drain":
        return out, Event("drain", ip, klass, f"rule {rule.name}: drain the IP from every pool", rule.name, short)
    until = now + float(rule.duration or 0)
    if old.active(now) and old.status == SUSPENDED and (
            rule.action == "throttle" or old.until is None or old.until >= until):
        # a suspension in force is neither weakened by a throttle nor shortened by another suspension
        return out, Event("hold", ip, klass, "already suspended", rule.name, short, old.until)
    if old.active(now) and old.status == _STATUS_OF[rule.action] and old.rule == rule.name:
        # the same rule again while in force: the path already does what it says; the duration runs from its start
        return out, Event("hold", ip, klass, f"already {old.status} by {rule.name}", rule.name, short, old.until)
    if rule.action == "suspend":
        others = [o for o in pool_ips if o != ip and usable.get(o, False)]
        if not others and not suspend_last:
            if old.blocked and old.rule == rule.name and not old.active(now):
                # refused already, and still the last usable IP: said once, not at every deferral
                return out, Event("hold", ip, klass, "suspension still refused (last usable IP)", rule.name, short)
            out[k] = replace(old, blocked=True, reply=short, rule=rule.name, since=old.since or now)
            reason = (f"rule {rule.name} asks to suspend, NOT suspended: the last usable IP of its pool for class "
                      f"{klass} (suspend_last is off); mail keeps flowing")
            return out, Event("blocked", ip, klass, reason, rule.name, short)
        out[k] = PathState(ip, klass, SUSPENDED, until, now, rule.name, short, {}, "rule", False)
        return out, Event("suspend", ip, klass, f"rule {rule.name} for {format_duration(rule.duration or 0)}",
                          rule.name, short, until)
    limits = dict(rule.limits)
    if old.active(now) and old.status == THROTTLED:
        # another throttle in force: the stricter of each limit, until the later end (a milder rule never loosens)
        for name, value in old.limits.items():
            limits[name] = value if limits.get(name) is None or value is None else min(value, int(limits[name] or 0))
        until = max(until, old.until) if old.until is not None else None  # type: ignore[assignment]
    out[k] = PathState(ip, klass, THROTTLED, until, now, rule.name, short, limits, "rule", False)
    span = "until resumed" if until is None else f"until {format_duration(until - now)} from now"
    return out, Event("throttle", ip, klass, f"rule {rule.name} {span}: "
                      + ", ".join(f"{a} {b}" for a, b in limits.items()), rule.name, short, until)


def operator_set(
    states: Mapping[str, PathState], ip: str, klass: str, status: str, now: float, seconds: float | None,
    limits: Mapping[str, int | None] | None = None,
) -> tuple[dict[str, PathState], Event]:
    """An operator's suspend/throttle (for `seconds`, or until resumed when None) or resume (status normal)."""
    out = dict(states)
    k = key(ip, klass)
    if status == NORMAL:
        out.pop(k, None)
        return out, Event("resume", ip, klass, "resumed by the operator")
    until = None if seconds is None else now + seconds
    out[k] = PathState(ip, klass, status, until, now, None, None, dict(limits or {}), "operator", False)
    span = "until resumed" if seconds is None else f"for {format_duration(seconds)}"
    kind = next((a for a, st in _STATUS_OF.items() if st == status), status)
    return out, Event(kind, ip, klass, f"by the operator {span}", None, None, until)


def expire(states: Mapping[str, PathState], now: float) -> tuple[dict[str, PathState], list[Event]]:
    """Drop the paths whose duration is over (they resume by themselves) and blocked marks older than an hour."""
    out: dict[str, PathState] = {}
    events = []
    for k, s in states.items():
        if s.status != NORMAL and s.until is not None and now >= s.until:
            events.append(Event("expire", s.ip, s.klass, f"{s.status} by {s.rule or s.by} ended: resumed", s.rule))
            continue
        if s.status == NORMAL and s.blocked and (s.since or 0) < now - 3600:
            continue
        out[k] = s
    return out, events


# ------------------------------------------------------------------------------------------ choosing an IP


class Window:
    """Sliding counts of messages per path for the per-minute and per-hour limits (60 one-minute buckets)."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[int, int]] = {}

    def add(self, k: str, now: float, n: int = 1) -> None:
        minute = int(now // 60)
        b = self._buckets.setdefault(k, {})
        b[minute] = b.get(minute, 0) + n
        if len(b) > 61:
            for m in [m for m in b if m < minute - 60]:  # minute - 60 still counts in part
                del b[m]

    def count(self, k: str, now: float, seconds: int) -> int:
        """Messages in the last `seconds` (60 or 3600), counting whole minutes: the current minute and the
        previous (seconds/60 - 1) ones, the previous minute weighted by how much of it is still in the window."""
        b = self._buckets.get(k)
        if not b:
            return 0
        minute = int(now // 60)
        span = seconds // 60
        frac = 1.0 - (now % 60) / 60.0
        total = 0.0
        for m, n in b.items():
            age = minute - m
            if age < span:
                total += n
            elif age == span:
                total += n * frac
        return math.ceil(total)


@dataclass(frozen=True)
class Member:
    """An IP of a pool on this host as the shaper sees it."""

    ip: str
    weight: int  # warm-up weight (0: drained or out of service)
    daily_cap: Mapping[str, int] = field(default_factory=dict)  # class -> messages today (warming IPs only)


@dataclass(frozen=True)
class Choice:
    ip: str | None
    reason: str  # why nothing was chosen, or "" when an IP was


def effective_limits(pclass: ProviderClass, state: PathState | None, now: float) -> dict[str, int | None]:
    limits: dict[str, int | None] = pclass.limits.as_dict()
    if state is not None and state.active(now) and state.status == THROTTLED:
        for k2, v in state.limits.items():
            current = limits.get(k2)
            if v is not None:  # a throttle only tightens
                limits[k2] = v if current is None else min(current, v)
    return limits


def blocked_by(member: Member, pclass: ProviderClass, state: PathState | None, window: Window, today_sent: int,
               now: float) -> str | None:
    """Why `member` cannot take one more message of `pclass` now (None: it can)."""
    if member.weight <= 0:
        return "drained"
    if state is not None and state.active(now) and state.status == SUSPENDED:
        return "suspended"
    limits = effective_limits(pclass, state, now)
    k = key(member.ip, pclass.name)
    per_minute, per_hour = limits.get("messages_per_minute"), limits.get("messages_per_hour")
    if per_minute is not None and window.count(k, now, 60) >= per_minute:
        return "rate"
    if per_hour is not None and window.count(k, now, 3600) >= per_hour:
        return "rate"
    cap = member.daily_cap.get(pclass.name)
    if cap is not None and today_sent >= cap:
        return "cap"
    return None


def choose(
    members: Sequence[Member],
    pclass: ProviderClass,
    states: Mapping[str, PathState],
    window: Window,
    today: Mapping[str, int],
    now: float,
    rng: random.Random,
) -> Choice:
    """A weighted draw among the members usable for `pclass`; `today`: messages routed today per path key."""
    usable: list[Member] = []
    reasons: dict[str, int] = {}
    for m in members:
        k = key(m.ip, pclass.name)
        why = blocked_by(m, pclass, states.get(k), window, today.get(k, 0), now)
        if why is None:
            usable.append(m)
        else:
            reasons[why] = reasons.get(why, 0) + 1
    if not usable:
        if not members:
            return Choice(None, "no sending IP in the pool")
        text = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        return Choice(None, f"every IP of the pool is held for class {pclass.name} ({text})")
    total = sum(m.weight for m in usable)
    pick = rng.uniform(0, total)
    for m in usable:
        pick -= m.weight
        if pick <= 0:
            return Choice(m.ip, "")
    return Choice(usable[-1].ip, "")


def daily_caps(hourly_volume: float | None, classes: Mapping[str, ProviderClass]) -> dict[str, int]:
    """A warming IP's cap per class for the day: its day's volume (24 x the warm-up schedule's hourly volume) times
    the class's warmup_share, at least 1. A warm IP (hourly_volume None) has no cap."""
    if hourly_volume is None:
        return {}
    return {name: max(1, int(hourly_volume * 24 * c.warmup_share)) for name, c in classes.items()}


def default_data() -> dict[str, Any]:
    """The shipped provider classes (sendfleet/data/provider_classes.yml), as plain data (a fresh copy)."""
    import copy

    return copy.deepcopy(_default_data())


@functools.cache
def _default_data() -> dict[str, Any]:
    import importlib.resources

    import yaml

    text = importlib.resources.files("sendfleet").joinpath("data/provider_classes.yml").read_text(encoding="utf-8")
    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's: 10x faster
    if not isinstance(data, dict):
        raise ShapingError("sendfleet/data/provider_classes.yml: expected a mapping of class name -> class")
    return data


def throttled_connections(paths: Iterable[Mapping[str, Any]], classes: Mapping[str, ProviderClass],
                          now: float) -> dict[str, int]:
    """"ip class" -> the connections a throttle in force allows on that path, where it is fewer than the class's
    (from the state file's `paths`). Postfix applies it per destination (`<transport>_destination_concurrency_limit`
    of the (IP, class) transport, or of the IP's own transport for class other): the monitor agent writes it and the
    postfix role reads it back from the agent's local fact."""
    out: dict[str, int] = {}
    for raw in paths:
        try:
            s = PathState.from_dict(raw)
        except (KeyError, TypeError, ValueError):
            continue
        conns = s.limits.get("connections")
        pclass = classes.get(s.klass)
        if s.status != THROTTLED or not s.active(now) or conns is None or pclass is None:
            continue
        if conns < pclass.limits.connections:
            out[key(s.ip, s.klass)] = int(conns)
    return dict(sorted(out.items()))


def suspended_other(paths: Iterable[Mapping[str, Any]], now: float) -> list[str]:
    """The IPs whose class `other` path is suspended (from the state file's `paths`): class other's mail takes the
    pool's randmap, so the monitor agent leaves them out of it (weight 0, as a drain does for every class)."""
    out = set()
    for raw in paths:
        try:
            s = PathState.from_dict(raw)
        except (KeyError, TypeError, ValueError):
            continue
        if s.klass == OTHER and s.status == SUSPENDED and s.active(now):
            out.add(s.ip)
    return sorted(out)
