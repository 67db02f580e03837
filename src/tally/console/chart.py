"""An account's balance over time as an SVG drawn on the server: no chart script,
nothing for the CSP to allow. Pure: points in, markup out.

The line is a step: a balance holds its value until the next change. Colours and
strokes come from the stylesheet (classes), not inline styles, which the CSP
forbids.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from markupsafe import Markup

from tally.console.rendering import amount, when

WIDTH = 640
HEIGHT = 220
LEFT = 90  # room for the amounts
RIGHT = 16
TOP = 16
BOTTOM = 40  # room for the times


def balance_chart(points: Sequence[tuple[int, int]], *, label: str) -> Markup:
    """``points``: (time in µs, balance in minor units), oldest first."""
    if not points:
        return Markup("")
    times = [t for t, _ in points]
    values = [v for _, v in points]
    low, high = min(0, *values), max(0, *values)
    span_value = (high - low) or 1
    t0, t1 = times[0], times[-1]
    span_time = t1 - t0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        if span_time == 0:
            return LEFT + (plot_w * i / max(1, len(points) - 1))
        return LEFT + plot_w * (times[i] - t0) / span_time

    def y(value: int) -> float:
        return TOP + plot_h * (high - value) / span_value

    steps: list[str] = []
    for i, value in enumerate(values):
        if i:
            steps.append(f"{x(i):.1f},{y(values[i - 1]):.1f}")
        steps.append(f"{x(i):.1f},{y(value):.1f}")
    steps.append(f"{LEFT + plot_w:.1f},{y(values[-1]):.1f}")
    e = html.escape
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{e(label)}</title>',
        f'<desc id="chart-desc">{len(points)} changes, from {e(amount(values[0]))} to '
        f"{e(amount(values[-1]))}; lowest {e(amount(min(values)))}, highest "
        f"{e(amount(max(values)))}.</desc>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
        f'<line class="zero" x1="{LEFT}" y1="{y(0):.1f}" x2="{LEFT + plot_w}" y2="{y(0):.1f}"/>',
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">'
        f"{e(amount(high))}</text>",
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">'
        f"{e(amount(low))}</text>",
        f'<text class="tick" x="{LEFT}" y="{HEIGHT - 12}">{e(when(t0))}</text>',
        f'<text class="tick" x="{LEFT + plot_w}" y="{HEIGHT - 12}" text-anchor="end">'
        f"{e(when(t1))}</text>",
        f'<polyline class="line" points="{" ".join(steps)}"/>',
        "</svg>",
    ]
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped
