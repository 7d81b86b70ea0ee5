"""The PNG chart of `sendfleet report`: deliveries per hour (stacked sent/deferred/bounced) and per IP.
Drawn with Pillow (no matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

COLOURS = {"sent": (46, 139, 87), "deferred": (230, 145, 30), "bounced": (200, 40, 40)}
STATUSES = ("sent", "deferred", "bounced")


def draw_report(
    hours: Sequence[str],
    per_hour: Mapping[str, Mapping[str, int]],
    per_ip: Sequence[tuple[str, Mapping[str, int]]],
    title: str,
) -> Image.Image:
    """hours: the x axis (YYYY-MM-DDTHH); per_hour[hour][status]; per_ip: [(label, {status: n})]."""
    width = 1000
    ip_rows = max(1, len(per_ip))
    height = 420 + 26 * ip_rows + 60
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.text((20, 12), title, fill="black", font=font)
    # legend
    x: float = width - 330
    for st in STATUSES:
        d.rectangle([x, 12, x + 12, 24], fill=COLOURS[st])
        d.text((x + 18, 12), st, fill="black", font=font)
        x += 100

    # panel 1: stacked bars per hour
    left, top, right, bottom = 70, 50, width - 30, 360
    d.line([left, top, left, bottom], fill="black")
    d.line([left, bottom, right, bottom], fill="black")
    totals = [sum(per_hour.get(h, {}).get(st, 0) for st in STATUSES) for h in hours]
    peak = max(totals, default=0) or 1
    for frac in (0.0, 0.5, 1.0):
        ty = bottom - int((bottom - top) * frac)
        d.line([left - 4, ty, left, ty], fill="black")
        d.text((8, ty - 6), f"{int(peak * frac)}", fill="black", font=font)
    n = max(1, len(hours))
    slot = (right - left) / n
    bar = max(1.0, slot * 0.7)
    for i, h in enumerate(hours):
        x0 = left + i * slot + (slot - bar) / 2
        y = float(bottom)
        for st in STATUSES:
            v = per_hour.get(h, {}).get(st, 0)
            if v:
                dy = (bottom - top) * v / peak
                d.rectangle([x0, y - dy, x0 + bar, y], fill=COLOURS[st])
                y -= dy
        if n <= 24 or i % max(1, n // 12) == 0:
            d.text((x0, bottom + 6), h[11:13] + "h", fill="black", font=font)
    d.text((left, bottom + 22), f"messages per hour (UTC), {hours[0] if hours else ''} .. {hours[-1] if hours else ''}",
           fill="black", font=font)

    # panel 2: horizontal stacked bars per IP
    top2 = 420
    d.text((20, top2 - 20), "per sending IP over the window", fill="black", font=font)
    ip_peak = max((sum(c.get(st, 0) for st in STATUSES) for _, c in per_ip), default=0) or 1
    label_w = 260
    for row, (label, counts) in enumerate(per_ip):
        y0 = top2 + row * 26
        d.text((20, y0 + 4), label, fill="black", font=font)
        x = float(label_w)
        for st in STATUSES:
            v = counts.get(st, 0)
            if v:
                dx = (width - label_w - 120) * v / ip_peak
                d.rectangle([x, y0 + 2, x + dx, y0 + 20], fill=COLOURS[st])
                x += dx
        text = " / ".join(str(counts.get(st, 0)) for st in STATUSES)
        d.text((x + 6, y0 + 4), text, fill="black", font=font)
    return img


def write_png(path: Path, image: Image.Image) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def per_hour_from(hours: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for h, rows in hours.items():
        cell = out.setdefault(h, {})
        for r in rows:
            cell[str(r["status"])] = cell.get(str(r["status"]), 0) + int(r["count"])
    return out
