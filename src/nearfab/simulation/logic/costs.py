"""Cost accounting: capital, fixed, labour, materials, QC and transport, and cost per dose.

Capital and fixed operating costs are charged per site per day over the measured window
(whether or not the site is busy: that is what makes an idle micro-factory expensive); labour,
materials and QC per batch started or tested (a failed batch still consumed them); transport
per shipment. This is the accounting of Triantafyllou et al. (Sci Rep 2022;12:17365), where the
manufacturing cost per therapy is (capital + fixed operating charge per day) x days / patients,
plus materials and QC per therapy, plus the transport tariffs of its two legs.
"""

from __future__ import annotations

from nearfab.simulation.logic.spec import DAYS_PER_YEAR, Product, ScenarioSpec, Site

CATEGORIES: tuple[str, ...] = ("capital", "fixed", "labour", "materials", "qc", "transport")


def annualised(capital: float, life_years: float, rate: float) -> float:
    """Equivalent annual cost of `capital` over `life_years` at discount `rate` (annuity)."""
    if life_years <= 0:
        raise ValueError("life_years must be positive")
    if rate == 0:
        return capital / life_years
    return float(capital * rate / (1.0 - (1.0 + rate) ** -life_years))


def per_day(annual: float) -> float:
    return annual / DAYS_PER_YEAR


class CostLedger:
    """Running totals by category over the measured window [start, horizon]."""

    __slots__ = ("labour_rate", "start", "totals")

    def __init__(self, spec: ScenarioSpec, start: float) -> None:
        self.start = start
        self.totals = dict.fromkeys(CATEGORIES, 0.0)
        window = spec.horizon_days - start
        self.totals["capital"] = sum(s.capital_per_day for s in spec.sites) * window
        self.totals["fixed"] = sum(s.fixed_per_day for s in spec.sites) * window

    def batch(self, now: float, site: Site, product: Product) -> None:
        if now >= self.start:
            t = self.totals
            t["labour"] += product.labour_hours_per_batch * site.labour_rate_per_hour
            t["materials"] += product.materials_per_batch

    def qc(self, now: float, product: Product) -> None:
        if now >= self.start:
            self.totals["qc"] += product.qc_per_batch

    def transport(self, now: float, cost: float) -> None:
        if now >= self.start:
            self.totals["transport"] += cost

    def per_dose(self, doses: int) -> dict[str, float]:
        """Cost per delivered dose by category, and `total`."""
        if doses <= 0:
            return {k: float("nan") for k in (*CATEGORIES, "total")}
        out = {k: v / doses for k, v in self.totals.items()}
        out["total"] = sum(self.totals.values()) / doses
        return out
