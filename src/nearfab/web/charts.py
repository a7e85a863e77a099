"""Small server-side SVG charts (no JavaScript, no CDN)."""

from __future__ import annotations

from html import escape


def mass_chart_svg(masses: list[float], target: float, tolerance_pct: float) -> str:
    """Per-unit masses against the target and the ±tolerance band."""
    if not masses or target <= 0:
        return ""
    w, h, pad = 640, 200, 30
    low, high = target * (1 - tolerance_pct / 100), target * (1 + tolerance_pct / 100)
    lo = min(min(masses), low) * 0.97
    hi = max(max(masses), high) * 1.03

    def x(i: int) -> float:
        return pad + (w - 2 * pad) * (i / max(1, len(masses) - 1))

    def y(v: float) -> float:
        return h - pad - (h - 2 * pad) * ((v - lo) / (hi - lo))

    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(masses))
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" class="{"bad" if not low <= v <= high else "ok"}">'
        f"<title>unit {i + 1}: {v:.2f} mg</title></circle>" for i, v in enumerate(masses))
    return (
        f'<svg viewBox="0 0 {w} {h}" class="chart" role="img" '
        f'aria-label="{escape(f"unit masses against target {target:.1f} mg")}">'
        f'<rect x="{pad}" y="{y(high):.1f}" width="{w - 2 * pad}" '
        f'height="{y(low) - y(high):.1f}" class="band"/>'
        f'<line x1="{pad}" x2="{w - pad}" y1="{y(target):.1f}" y2="{y(target):.1f}" class="target"/>'
        f'<polyline points="{points}" class="series"/>{dots}'
        f'<text x="{pad}" y="{pad - 10}">mg (target {target:.1f}, ±{tolerance_pct:g} %)</text>'
        "</svg>"
    )
