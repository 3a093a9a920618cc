"""Small bar charts as inline SVG, drawn on the server (no chart library, no JavaScript)."""

from __future__ import annotations

from markupsafe import Markup, escape


def bars(counts: list[int], labels: list[str] | None = None, *, title: str = "", width: int = 240,
         height: int = 48) -> Markup:
    n = max(len(counts), 1)
    top = max(counts or [0]) or 1
    w = width / n
    parts = [f'<svg class="chart" role="img" width="{width}" height="{height + 12}" '
             f'viewBox="0 0 {width} {height + 12}"><title>{escape(title)}</title>']
    for i, c in enumerate(counts):
        h = round(height * c / top, 1) if c else 0
        tip = f"{labels[i]}: {c}" if labels else str(c)
        parts.append(f'<rect x="{i * w + 0.5:.1f}" y="{height - h:.1f}" width="{max(w - 1, 1):.1f}" '
                     f'height="{max(h, 0.5 if c else 0):.1f}"><title>{escape(tip)}</title></rect>')
    parts.append(f'<line x1="0" y1="{height + 0.5}" x2="{width}" y2="{height + 0.5}" class="axis"/>')
    parts.append(f'<text x="{width}" y="{height + 11}" text-anchor="end">max {top}</text></svg>')
    return Markup("".join(parts))
