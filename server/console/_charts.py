"""Charts as inline SVG, drawn on the server from a few hundred numbers: no JavaScript, nothing to download,
readable without colour (each series is also in a table beside it)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from markupsafe import Markup

#: Colour-blind-safe palette (Okabe-Ito), cycled.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
WIDTH, HEIGHT, PAD = 640, 200, 28


def stacked_shares(labels: Sequence[str], series: Mapping[str, Sequence[float]], title: str) -> Markup:
    """A stacked area chart of each series' share of the total at every point (x: `labels`, e.g. times)."""
    if len(labels) == 1:  # one slot: drawn across the width, as a band
        labels = [labels[0], labels[0]]
        series = {name: [values[0], values[0]] for name, values in series.items()}
    n = len(labels)
    names = list(series)
    if n == 0 or not names:
        return Markup(f'<p class="empty">{html.escape(title)}: no decisions learned in this window yet.</p>')
    totals = [sum(series[name][i] for name in names) for i in range(n)]
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def x(i: int) -> float:
        return PAD + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(share: float) -> float:
        return PAD + plot_h * (1.0 - share)

    below = [0.0] * n
    shapes = []
    for k, name in enumerate(names):
        above = [below[i] + (series[name][i] / totals[i] if totals[i] else 0.0) for i in range(n)]
        top = " ".join(f"{x(i):.1f},{y(above[i]):.1f}" for i in range(n))
        bottom = " ".join(f"{x(i):.1f},{y(below[i]):.1f}" for i in reversed(range(n)))
        colour = PALETTE[k % len(PALETTE)]
        shapes.append(
            f'<polygon points="{top} {bottom}" fill="{colour}" fill-opacity="0.85">'
            f"<title>{html.escape(name)}</title></polygon>"
        )
        below = above
    legend = "".join(
        f'<span class="key"><svg class="swatch" viewBox="0 0 10 10" aria-hidden="true">'
        f'<rect width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/></svg>{html.escape(name)}</span>'
        for k, name in enumerate(names)
    )
    axis = (
        f'<text x="{PAD}" y="{HEIGHT - 6}" class="tick">{html.escape(labels[0])}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" class="tick" text-anchor="end">{html.escape(labels[-1])}</text>'
        f'<text x="4" y="{PAD + 4}" class="tick">100%</text><text x="4" y="{HEIGHT - PAD}" class="tick">0%</text>'
    )
    return Markup(
        f'<figure><svg role="img" aria-label="{html.escape(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'class="chart">{"".join(shapes)}{axis}</svg><figcaption>{html.escape(title)}</figcaption>'
        f'<div class="legend">{legend}</div></figure>'
    )


def interval_bars(rows: Sequence[tuple[str, float, float, float]], title: str) -> Markup:
    """Point estimates with their intervals, one row each: (label, value, low, high), values in [0, 1]."""
    if not rows:
        return Markup(f'<p class="empty">{html.escape(title)}: not enough learned decisions yet.</p>')
    row_h, left = 26, 110
    height = row_h * len(rows) + 22
    plot_w = WIDTH - left - PAD
    top = max(max(h for _, _, _, h in rows), 1e-9)

    def x(value: float) -> float:
        return left + plot_w * max(0.0, value) / top

    parts = []
    for i, (label, value, low, high) in enumerate(rows):
        cy = 14 + i * row_h
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<text x="4" y="{cy + 4}" class="tick">{html.escape(label)}</text>'
            f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{cy}" y2="{cy}" stroke="{colour}" stroke-width="3"/>'
            f'<circle cx="{x(value):.1f}" cy="{cy}" r="5" fill="{colour}"><title>{html.escape(label)}: '
            f"{value:.4f} [{low:.4f}, {high:.4f}]</title></circle>"
        )
    parts.append(
        f'<text x="{left}" y="{height - 2}" class="tick">0</text>'
        f'<text x="{left + plot_w}" y="{height - 2}" class="tick" text-anchor="end">{top:.3f}</text>'
    )
    return Markup(
        f'<figure><svg role="img" aria-label="{html.escape(title)}" viewBox="0 0 {WIDTH} {height + 4}" '
        f'class="chart">{"".join(parts)}</svg><figcaption>{html.escape(title)}</figcaption></figure>'
    )
