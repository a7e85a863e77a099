"""Small server-side SVG charts (no JavaScript, no CDN)."""

from __future__ import annotations

from html import escape


def _tick(v: float) -> str:
    return f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"


def measurement_chart_svg(
    values: list[float],
    target: float,
    tolerance_pct: float,
    *,
    label: str,
    unit: str,
) -> str:
    """A per-unit measurement (`label` in `unit`, both as the product family names them)
    against the target and the ±tolerance band, with labelled axes."""
    if not values or target <= 0:
        return ""
    w, h = 720, 240
    left, right, top, bottom = 64, 60, 28, 34
    low, high = target * (1 - tolerance_pct / 100), target * (1 + tolerance_pct / 100)
    lo = min(min(values), low)
    hi = max(max(values), high)
    span = hi - lo or target * 0.1
    lo, hi = lo - span * 0.08, hi + span * 0.08
    n = len(values)
    outside = sum(1 for v in values if not low <= v <= high)

    def x(i: int) -> float:
        if n == 1:
            return (left + w - right) / 2
        inset = 12  # keep the first and last dots off the axes
        return left + inset + (w - left - right - 2 * inset) * (i / (n - 1))

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))

    summary = (
        f"{n} units' {label} against target {target:.1f} {unit}; "
        f"{outside} outside ±{tolerance_pct:g} %"
    )
    parts = [
        f'<svg viewBox="0 0 {w} {h}" class="chart" role="img" aria-label="{escape(summary)}">',
        f'<rect x="{left}" y="{y(high):.1f}" width="{w - left - right}" '
        f'height="{y(low) - y(high):.1f}" class="band"/>',
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}" class="axis"/>',
        f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" class="axis"/>',
    ]
    for value, note, cls in (
        (high, f"+{tolerance_pct:g} %", "limit"),
        (target, "target", "target"),
        (low, f"−{tolerance_pct:g} %", "limit"),
    ):
        parts.append(
            f'<line x1="{left}" x2="{w - right}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" class="{cls}"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{_tick(value)}</text>'
        )
        parts.append(
            f'<text x="{w - right + 4}" y="{y(value) + 4:.1f}" class="note">{escape(note)}</text>'
        )
    step = max(1, round(n / 12))
    for i in range(0, n, step):
        parts.append(
            f'<text x="{x(i):.1f}" y="{h - bottom + 16}" text-anchor="middle">{i + 1}</text>'
        )
    if n > 1:
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline points="{points}" class="series"/>')
    for i, v in enumerate(values):
        cls = "ok" if low <= v <= high else "bad"
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="{4 if cls == "bad" else 3}" '
            f'class="{cls}"><title>unit {i + 1}: {v:.2f} {escape(unit)}</title></circle>'
        )
    parts.append(
        f'<text x="{left}" y="{top - 10}" class="title">{escape(label)} ({escape(unit)}) per '
        f"unit — target {target:.1f} {escape(unit)} ± {tolerance_pct:g} %; {outside} of {n} "
        "outside</text>"
    )
    parts.append(
        f'<text x="{(left + w - right) / 2:.1f}" y="{h - 4}" text-anchor="middle" '
        'class="note">unit</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
