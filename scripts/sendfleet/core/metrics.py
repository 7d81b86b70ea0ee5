"""Prometheus text exposition format (node_exporter's textfile collector reads it). Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    name: str
    help: str
    kind: str = "gauge"  # gauge | counter
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {_escape(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"{fam.name}{{{text}}} {_number(value)}" if text else f"{fam.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of an exposition text: (name, sorted labels) -> value. For tests and `report`."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if "{" in head:
            name, _, rest = head.partition("{")
            labels = _labels(rest.rstrip("}"))
        else:
            name, labels = head, {}
        out[(name, tuple(sorted(labels.items())))] = float(value)
    return out


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        key = text[i:eq].strip().lstrip(",").strip()
        j = eq + 2  # after ="
        buf = []
        while text[j] != '"':
            if text[j] == "\\":
                j += 1
                buf.append({"n": "\n"}.get(text[j], text[j]))
            else:
                buf.append(text[j])
            j += 1
        labels[key] = "".join(buf)
        i = j + 1
    return labels


def samples_of(parsed: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> list[
    tuple[dict[str, str], float]
]:
    return [(dict(labels), v) for (n, labels), v in parsed.items() if n == name]
