"""`sendfleet vet --heatmap FILE`: one 16×16 grid per IPv4 /24, a cell per address, so a person can see a
purchased range. PNG (pillow) by default, SVG when the name ends in `.svg`.

Cells of target addresses are drawn in full colour; neighbours (scanned only to score the /24) are drawn pale.
"""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Iterator
from xml.sax.saxutils import escape

from sendfleet.core.vetbook import VetBook

COLOURS: dict[str, tuple[int, int, int]] = {
    "clean": (46, 160, 67),
    "listed": (207, 34, 46),
    "unknown": (150, 150, 150),
    "neighbourhood": (240, 160, 30),
}
LEGEND = (
    ("clean", "clean, admitted"),
    ("listed", "listed"),
    ("unknown", "unknown (no trustworthy answer)"),
    ("neighbourhood", "clean, not admitted: poor /24"),
)
CELL = 10
GAP = 1
GRID = 16 * CELL
MARGIN = 14
TITLE = 16
PER_ROW = 8


def _pale(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = rgb
    return (r + (255 - r) * 3 // 5, g + (255 - g) * 3 // 5, b + (255 - b) * 3 // 5)


def _cells(book: VetBook, base: int) -> Iterator[tuple[int, int, tuple[int, int, int]]]:
    for host in range(256):
        value = base + host
        colour = COLOURS[book.cell_state(value)]
        if not book.targets.contains(4, value):
            colour = _pale(colour)
        yield host % 16, host // 16, colour


def _layout(count: int) -> tuple[int, int, int]:
    cols = max(1, min(PER_ROW, count))
    rows = (count + cols - 1) // cols
    width = max(MARGIN + cols * (GRID + MARGIN), 420)  # room for the legend
    height = MARGIN + rows * (GRID + TITLE + MARGIN) + 20 * (len(LEGEND) + 1)
    return cols, width, height


def render_png(book: VetBook) -> bytes:
    from PIL import Image, ImageDraw  # only when a PNG is asked for

    bases = list(book.targets.networks24())
    cols, width, height = _layout(len(bases))
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, base in enumerate(bases):
        x0 = MARGIN + (i % cols) * (GRID + MARGIN)
        y0 = MARGIN + (i // cols) * (GRID + TITLE + MARGIN)
        score = book.network_score(base)
        draw.text((x0, y0), f"{ipaddress.IPv4Address(base)}/24  {score.listed} listed", fill=(0, 0, 0))
        for cx, cy, colour in _cells(book, base):
            x, y = x0 + cx * CELL, y0 + TITLE + cy * CELL
            draw.rectangle((x, y, x + CELL - 1 - GAP, y + CELL - 1 - GAP), fill=colour)
    y = height - 20 * (len(LEGEND) + 1)
    for key, label in LEGEND:
        draw.rectangle((MARGIN, y, MARGIN + 12, y + 12), fill=COLOURS[key])
        draw.text((MARGIN + 20, y), label, fill=(0, 0, 0))
        y += 20
    draw.text((MARGIN, y), "pale cells: neighbours (not targets), scanned to score the /24", fill=(0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def render_svg(book: VetBook) -> str:
    bases = list(book.targets.networks24())
    cols, width, height = _layout(len(bases))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="10">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for i, base in enumerate(bases):
        x0 = MARGIN + (i % cols) * (GRID + MARGIN)
        y0 = MARGIN + (i // cols) * (GRID + TITLE + MARGIN)
        score = book.network_score(base)
        label = escape(f"{ipaddress.IPv4Address(base)}/24  {score.listed} listed")
        out.append(f'<text x="{x0}" y="{y0 + 10}">{label}</text>')
        for cx, cy, colour in _cells(book, base):
            ip = ipaddress.IPv4Address(base + cy * 16 + cx)
            out.append(
                f'<rect x="{x0 + cx * CELL}" y="{y0 + TITLE + cy * CELL}" width="{CELL - GAP}" '
                f'height="{CELL - GAP}" fill="{_hex(colour)}"><title>{ip}</title></rect>'
            )
    y = height - 20 * (len(LEGEND) + 1)
    for key, label in LEGEND:
        out.append(f'<rect x="{MARGIN}" y="{y}" width="12" height="12" fill="{_hex(COLOURS[key])}"/>')
        out.append(f'<text x="{MARGIN + 20}" y="{y + 10}">{escape(label)}</text>')
        y += 20
    note = "pale cells: neighbours (not targets), scanned to score the /24"
    out.append(f'<text x="{MARGIN}" y="{y + 10}">{note}</text>')
    out.append("</svg>\n")
    return "\n".join(out)
