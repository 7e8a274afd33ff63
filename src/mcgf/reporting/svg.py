"""Small charts as inline SVG text: grouped bars and line curves.

The report needs a handful of plain charts (per-weather R@1/AP, training curves, posture
curves). A plotting stack (matplotlib) would be a heavy dependency for that, and its
output would still have to be embedded; writing the few SVG elements ourselves keeps the
report one static page with no extra package. Functions here are pure: numbers in,
SVG text out, with the geometry exposed (:class:`Frame`) so that tests can check it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

#: Series colours (colour-blind friendly, Okabe–Ito order).
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
)
FONT = "font-family:sans-serif;font-size:11px"


@dataclass(frozen=True)
class Frame:
    """The plotting area of a chart, in SVG pixels, and the value range it maps."""

    left: float
    top: float
    width: float
    height: float
    y_min: float
    y_max: float

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def y(self, value: float) -> float:
        """SVG y coordinate of ``value`` (clamped to the frame)."""
        span = self.y_max - self.y_min
        frac = 0.0 if span <= 0 else (value - self.y_min) / span
        return self.bottom - min(max(frac, 0.0), 1.0) * self.height


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ ``value`` (an axis maximum)."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10.0**exp
        if top >= value * (1 - 1e-12):
            return top
    return 10.0 ** (exp + 1)


def value_range(values: Sequence[float], intervals: int = 4) -> tuple[float, float]:
    """A value axis for ``values``: from 0, or from a round number below a negative
    minimum, to a round number above the maximum, cut into ``intervals`` equal steps of 1,
    2, 2.5 or 5 × 10^k, so that each of the ``intervals + 1`` ticks is a round number."""
    if not values:
        return (0.0, 1.0)
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    if lo == 0.0:
        return (0.0, nice_ceiling(hi))
    step = nice_ceiling((hi - lo) / intervals)
    while True:
        start = math.floor(lo / step + 1e-9) * step
        if start + intervals * step >= hi * (1 - 1e-12):
            return (start, start + intervals * step)
        step = nice_ceiling(step * (1 + 1e-6))  # the next round step


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """``count`` evenly spaced tick values from ``lo`` to ``hi`` inclusive."""
    if count < 2 or hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]


def round_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """About ``target`` round values (multiples of 1, 2, 2.5 or 5 × 10^k) within [lo, hi]."""
    if hi <= lo:
        return [lo]
    exp = math.floor(math.log10((hi - lo) / max(target - 1, 1)))
    best: list[float] = [lo, hi]
    for k in (exp - 1, exp, exp + 1):
        for mult in (1.0, 2.0, 2.5, 5.0):
            step = mult * 10.0**k
            first = math.ceil(lo / step - 1e-9) * step
            count = math.floor((hi - first) / step + 1e-9) + 1
            if count >= 2 and abs(count - target) < abs(len(best) - target):
                best = [first + i * step for i in range(count)]
    return best


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _axes(frame: Frame, width: int, height: int, title: str, y_label: str,
          tick_values: Sequence[float], margin: tuple[float, float] = (0.0, 0.0)) -> list[str]:
    """The chart's ``<svg>`` opening, background, title, value axis and grid lines;
    ``margin`` = ``(left, bottom)`` px added outside the ``width`` × ``height`` layout
    (for slanted labels), which keeps its coordinates."""
    ml, mb = margin
    w, h = width + ml, height + mb
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
        f'viewBox="{-ml:.0f} 0 {w:.0f} {h:.0f}" role="img" aria-label="{escape(title)}">',
        f'<rect x="{-ml:.0f}" y="0" width="{w:.0f}" height="{h:.0f}" fill="#ffffff"/>',
        f'<text x="{width / 2:.1f}" y="14" text-anchor="middle" style="{FONT};font-weight:bold">'
        f"{escape(title)}</text>",
    ]
    for t in tick_values:
        y = frame.y(t)
        out.append(f'<line x1="{frame.left:.1f}" y1="{y:.1f}" x2="{frame.left + frame.width:.1f}" '
                   f'y2="{y:.1f}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{frame.left - 4:.1f}" y="{y + 4:.1f}" text-anchor="end" '
                   f'style="{FONT}">{_fmt(t)}</text>')
    out.append(f'<line x1="{frame.left:.1f}" y1="{frame.top:.1f}" x2="{frame.left:.1f}" '
               f'y2="{frame.bottom:.1f}" stroke="#444"/>')
    out.append(f'<line x1="{frame.left:.1f}" y1="{frame.bottom:.1f}" '
               f'x2="{frame.left + frame.width:.1f}" y2="{frame.bottom:.1f}" stroke="#444"/>')
    if y_label:
        cy = frame.top + frame.height / 2
        out.append(f'<text x="12" y="{cy:.1f}" text-anchor="middle" style="{FONT}" '
                   f'transform="rotate(-90 12 {cy:.1f})">{escape(y_label)}</text>')
    return out


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        yy = y + 14 * i
        out.append(f'<rect x="{x:.1f}" y="{yy - 8:.1f}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 14:.1f}" y="{yy + 1:.1f}" style="{FONT}">{escape(name)}</text>')
    return out


def legend_width(names: Sequence[str]) -> float:
    """Room for the legend on the right of a chart (none for a single series)."""
    if len(names) < 2:
        return 0.0
    return 30.0 + 6.2 * max(len(n) for n in names)


def bar_frame(names: Sequence[str], *, width: int, height: int, y_max: float,
              y_min: float = 0.0) -> Frame:
    """The plotting area :func:`bar_chart` uses for these series and sizes."""
    legend = legend_width(names)
    return Frame(left=48.0, top=24.0, width=float(width - 48 - 12 - legend),
                 height=float(height - 24 - 58), y_min=y_min, y_max=y_max)


def bar_ticks(values: Sequence[float], y_max: float | None = None) -> list[float]:
    """The value axis of :func:`bar_chart` as its tick values, bottom to top: from 0 to
    ``y_max`` (default a round number above the largest value); with a negative value,
    from a round number below it, in 3 to 6 equal round steps through 0 (the tightest
    span of :func:`value_range`)."""
    if min(values, default=0.0) >= 0:
        return ticks(0.0, y_max if y_max is not None else nice_ceiling(max(values, default=1.0)))
    data = [*values, *([y_max] if y_max is not None else [])]
    k, (lo, hi) = min(((k, value_range(data, intervals=k)) for k in range(3, 7)),
                      key=lambda c: (c[1][1] - c[1][0], c[0]))
    return [round(t, 12) for t in ticks(lo, hi, count=k + 1)]  # no 2.8e-17 for 0


def slanted_margin(categories: Sequence[str], frame: Frame, group: float,
                   height: int) -> tuple[float, float]:
    """``(left, bottom)`` px a bar chart needs beyond its layout for its category labels
    written at 40° (ending under their group's centre), so that long ones (``height 150 ·
    normal``) are not cut at the left or bottom edge. Text width is estimated at 6.2 px
    per character of the 11 px sans-serif font."""
    left = bottom = 0.0
    for i, cat in enumerate(categories):
        length = 6.2 * len(cat)
        cx = frame.left + (i + 0.5) * group
        left = max(left, length * math.cos(math.radians(40)) - cx + 4)
        bottom = max(bottom, frame.bottom + 12 + length * math.sin(math.radians(40)) + 6 - height)
    return math.ceil(left), math.ceil(bottom)


def bar_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    y_label: str = "",
    y_max: float | None = None,
    width: int = 640,
    height: int = 260,
    references: Sequence[tuple[float, str]] = (),
) -> str:
    """Grouped vertical bars: one group per category, one bar per series.

    Args:
        categories: group labels along the x axis (written at 40° when long).
        series: name → one value per category (``None``: no bar).
        title, y_label: text.
        y_max: top of the value axis (default: a round number above the largest value);
            a negative value extends the axis below 0 (:func:`bar_ticks`).
        width, height: SVG size in px.
        references: ``(value, label)`` horizontal dashed lines across the bars (e.g. a
            chance level), each a ``<line class="reference">`` with ``data-value``.

    Returns:
        An ``<svg>`` element. Each bar is a ``<rect class="bar">`` carrying
        ``data-series``, ``data-category`` and ``data-value``; it stands on the 0 line
        (above it, or below it for a negative value) and its height is
        ``|value| / (y_max - y_min)`` of the plotting area's height.
    """
    names = list(series)
    for name, values in series.items():
        if len(values) != len(categories):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(categories)} categories")
    finite = [float(v) for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    axis = bar_ticks(finite, y_max)
    frame = bar_frame(names, width=width, height=height, y_max=axis[-1], y_min=axis[0])
    n_cat, n_ser = max(len(categories), 1), max(len(names), 1)
    group = frame.width / n_cat
    bar = min(group * 0.8 / n_ser, 36.0)  # one wide category must not give slabs
    slanted = max((len(c) for c in categories), default=0) * 6 > group
    out = _axes(frame, width, height, title, y_label, axis,
                slanted_margin(categories, frame, group, height) if slanted else (0.0, 0.0))
    zero = frame.y(0.0)
    for ci, cat in enumerate(categories):
        gx = frame.left + (ci + 0.5) * group - bar * n_ser / 2
        for si, name in enumerate(names):
            v = series[name][ci]
            if v is None or not math.isfinite(v):
                continue
            y = frame.y(float(v))
            out.append(
                f'<rect class="bar" x="{gx + si * bar:.2f}" y="{min(y, zero):.2f}" width="{bar:.2f}" '
                f'height="{abs(zero - y):.2f}" fill="{PALETTE[si % len(PALETTE)]}" '
                f'data-series="{escape(name)}" data-category="{escape(cat)}" '
                f'data-value="{float(v):.6g}"><title>{escape(cat)} · {escape(name)}: '
                f"{float(v):.2f}</title></rect>"
            )
        cx, cy = frame.left + (ci + 0.5) * group, frame.bottom + 12
        if slanted:
            out.append(f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="end" style="{FONT}" '
                       f'transform="rotate(-40 {cx:.1f} {cy:.1f})">{escape(cat)}</text>')
        else:
            out.append(f'<text x="{cx:.1f}" y="{cy + 2:.1f}" text-anchor="middle" '
                       f'style="{FONT}">{escape(cat)}</text>')
    for value, label in references:  # drawn over the bars so that it stays visible
        y = frame.y(float(value))
        out.append(f'<line class="reference" x1="{frame.left:.1f}" y1="{y:.2f}" '
                   f'x2="{frame.left + frame.width:.1f}" y2="{y:.2f}" stroke="#222" '
                   f'stroke-dasharray="5,3" data-value="{float(value):.6g}"/>')
        out.append(f'<text x="{frame.left + 4:.1f}" y="{y - 3:.2f}" '
                   f'style="{FONT}">{escape(label)}</text>')
    if len(names) > 1:
        out += _legend(names, frame.left + frame.width + 14, frame.top + 8)
    out.append("</svg>")
    return "\n".join(out)


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    y_range: tuple[float, float] | None = None,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    x_range: tuple[float, float] | None = None,
    markers: bool = False,
    width: int = 640,
    height: int = 270,
) -> str:
    """Curves of ``y`` against ``x``, one polyline per series.

    Args:
        series: name → (x values, y values); ``None``/NaN y values break the line.
        title, x_label, y_label: text.
        y_range: value axis range (default: :func:`value_range` of the data, 0 or a round
            number below a negative minimum to a round number above the maximum).
        x_ticks: (position, label) pairs along the x axis (default: round values); a
            ``\n`` in a label starts a second line.
        x_range: x axis range (default: the data's).
        markers: draw a dot at every point (for curves with few points).
        width, height: SVG size in px.

    Returns:
        An ``<svg>`` element with one ``<polyline class="curve">`` per unbroken run of
        points (``data-series`` names the series).
    """
    names = list(series)
    xs_all = [float(x) for xs, _ in series.values() for x in xs]
    ys_all = [float(y) for _, ys in series.values() for y in ys if y is not None and math.isfinite(y)]
    if y_range is None:
        y_range = value_range(ys_all, intervals=4)
    x_lo, x_hi = x_range if x_range is not None else (
        (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0))
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    legend = legend_width(names)
    frame = Frame(left=48.0, top=24.0, width=float(width - 48 - 16 - legend),
                  height=float(height - 24 - 52), y_min=y_range[0], y_max=y_range[1])

    def px(x: float) -> float:
        return frame.left + (x - x_lo) / (x_hi - x_lo) * frame.width

    out = _axes(frame, width, height, title, y_label, ticks(*y_range))
    for pos, label in (x_ticks if x_ticks is not None
                       else [(t, _fmt(t)) for t in round_ticks(x_lo, x_hi)]):
        lines = "".join(f'<tspan x="{px(pos):.1f}" dy="{0 if i == 0 else 12}">{escape(part)}</tspan>'
                        for i, part in enumerate(label.split("\n")))
        out.append(f'<text x="{px(pos):.1f}" y="{frame.bottom + 14:.1f}" text-anchor="middle" '
                   f'style="{FONT}">{lines}</text>')
    if x_label:
        out.append(f'<text x="{frame.left + frame.width / 2:.1f}" y="{height - 6}" '
                   f'text-anchor="middle" style="{FONT}">{escape(x_label)}</text>')
    for si, name in enumerate(names):
        colour = PALETTE[si % len(PALETTE)]
        xs, ys = series[name]
        runs: list[list[tuple[float, float]]] = [[]]
        for x, y in zip(xs, ys, strict=True):
            if y is None or not math.isfinite(y):
                runs.append([])
                continue
            runs[-1].append((px(float(x)), frame.y(float(y))))
        for run in runs:
            if len(run) > 1:
                pts = " ".join(f"{a:.2f},{b:.2f}" for a, b in run)
                out.append(f'<polyline class="curve" points="{pts}" fill="none" stroke="{colour}" '
                           f'stroke-width="1.6" data-series="{escape(name)}"/>')
            if markers or len(run) == 1:
                out += [f'<circle cx="{a:.2f}" cy="{b:.2f}" r="2.5" fill="{colour}"/>' for a, b in run]
    if len(names) > 1:
        out += _legend(names, frame.left + frame.width + 14, frame.top + 8)
    out.append("</svg>")
    return "\n".join(out)
