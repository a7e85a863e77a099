"""The cross-site report: each site (machine, material lot, month) of a master file's made
batches against the rest of the network (docs/comparability.md)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nearfab.common.errors import NotFound, ValidationFailed
from nearfab.comparability import logic
from nearfab.comparability.enums import (
    GroupBy,
)
from nearfab.designs import FamilyRegistry
from nearfab.identity import (
    Actor,
    Permission,
    authorize,
    is_network_wide,
)
from nearfab.masterfiles import MasterFileService
from nearfab.masterfiles.schemas import MEASUREMENT_PCT
from nearfab.network import NetworkService
from nearfab.production.reads import batch_records_of_product
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.masterfiles import MasterFile
    from nearfab.production import BatchRecord

log = logging.getLogger(__name__)

MADE = ("completed", "released", "rejected")  # batches with a measurement document
MSPC_ALPHA = 0.0027  # the false-alarm rate of 3σ limits
DEFAULT_ALPHA, DEFAULT_MIN_CPK = 0.05, 1.33


@dataclass
class _Attribute:
    name: str
    label: str
    unit: str
    lsl: float | None
    usl: float | None
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # (group, batch number, finished at, batch mean) in time order
    points: list[tuple[str, str, str, float]] = field(default_factory=list)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


# (uow, master file code) -> the site nodes' batch summaries the control holds (dicts as the
# sites sent them: docs/replication.md, "Comparability across the network")
ReceivedBatches = Callable[[UnitOfWork, str], Iterable[Mapping[str, Any]]]


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ReceivedBatch:
    """A batch another node made, as its summary says (what `_group` and `_observe` read of a
    batch record): the control node's view of a site node's batch."""

    id: str
    batch_number: str
    status: str
    site_id: str
    machine_id: str
    material_lot_id: str
    material_lot_number: str
    master_file_id: str
    master_file_code: str
    started_at: datetime
    finished_at: datetime | None
    design: dict[str, Any] | None
    measurements: dict[str, Any] | None
    telemetry_summary: dict[str, Any] | None

    @classmethod
    def of(cls, summary: Mapping[str, Any]) -> ReceivedBatch | None:
        """The batch a summary describes; None for one without what the report reads (a
        summary sent before it carried the batch's documents)."""
        try:
            started = _moment(summary["started_at"])
            if started is None:
                return None
            return cls(
                id=str(summary["id"]),
                batch_number=str(summary["batch_number"]),
                status=str(summary["status"]),
                site_id=str(summary["site_id"]),
                machine_id=str(summary["machine_id"]),
                material_lot_id=str(summary["material_lot_id"]),
                material_lot_number=str(summary["material_lot_number"]),
                master_file_id=str(summary["master_file_id"]),
                master_file_code=str(summary["master_file_code"]),
                started_at=started,
                finished_at=_moment(summary["finished_at"]),
                design=summary["design"],
                measurements=summary["measurements"],
                telemetry_summary=summary["telemetry_summary"],
            )
        except (KeyError, TypeError, ValueError):
            return None


def _made_order(batch: BatchRecord | ReceivedBatch) -> tuple[datetime, str]:
    finished = batch.finished_at or batch.started_at
    return (finished if finished.tzinfo else finished.replace(tzinfo=UTC), batch.batch_number)


class Reports:
    def __init__(
        self,
        network: NetworkService,
        master_files: MasterFileService,
        families: FamilyRegistry,
        *,
        received_batches: ReceivedBatches | None = None,
    ) -> None:
        self._network = network
        self._master_files = master_files
        self._families = families
        # at the control node only: the site nodes' batches it holds (bootstrap wires it)
        self.received_batches = received_batches

    # --- the cross-site report ----------------------------------------------------------------
    def report(
        self,
        uow: UnitOfWork,
        actor: Actor,
        master_file_code: str,
        by: str,
        suspensions: Callable[..., list[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Each group (site, machine, material lot or month) of the master file's made batches
        against the rest of the network: chart of means, TOST, Cpk, run rule and Hotelling T².
        Site staff see their own site's groups (the network's statistics are computed on every
        site's batches, as the comparison needs)."""
        authorize(actor, Permission.COMPARABILITY_READ)
        try:
            grouping = GroupBy(by)
        except ValueError:
            raise ValidationFailed(
                f"by must be one of {', '.join(g.value for g in GroupBy)}", field="by"
            ) from None
        mf = self._master_files.effective_for_code(uow, master_file_code)
        section: Mapping[str, Any] = mf.comparability or {}
        margins: Mapping[str, float] = section.get("margins") or {}
        alpha = float(section.get("alpha", DEFAULT_ALPHA))
        min_cpk = float(section.get("min_cpk", DEFAULT_MIN_CPK))
        own = None if is_network_wide(actor, Permission.COMPARABILITY_READ) else actor.site_id
        batches: list[BatchRecord | ReceivedBatch] = list(
            batch_records_of_product(uow.session, mf.code, MADE, finished_only=True)
        )
        batches = self._with_received(uow, mf.code, batches)
        if grouping is GroupBy.MONTH and own is not None:
            batches = [b for b in batches if b.site_id == own]  # months of their own site
        sites = {s.id: s.code for s in self._network.list_sites(uow)}
        machines = {m.id: (m.name, m.site_id) for m in self._network.list_machines(uow)}
        group_site: dict[str, str | None] = {}
        labels: dict[str, str] = {}
        attributes: dict[str, _Attribute] = {}
        vectors: dict[str, list[list[float]]] = defaultdict(list)
        versions: dict[str, MasterFile] = {}
        for batch in batches:
            version = versions.get(batch.master_file_id)
            if version is None:
                version = versions[batch.master_file_id] = self._master_files.get(
                    uow, batch.master_file_id
                )
            key, label = self._group(grouping, batch, sites, machines)
            labels[key] = label
            # months of a site's own batches are its own; the network's months belong to none
            site = batch.site_id if grouping is not GroupBy.MONTH else own
            if key in group_site and group_site[key] != site:
                site = None  # a lot (or month) shared by sites belongs to none of them
            group_site[key] = site
            vector = self._observe(version, batch, key, attributes)
            if vector is not None:
                vectors[key].append(vector)
        visible = {k for k, s in group_site.items() if own is None or s == own}
        out_attributes = [
            self._attribute(a, margins.get(a.name), alpha, min_cpk, labels, group_site, visible)
            for a in attributes.values()
        ]
        mspc = self._mspc(vectors, labels, visible)
        flagged = [
            f"{g['label']} · {a['label']}: {flag}"
            for a in out_attributes
            for g in a["groups"]
            for flag in g["flags"]
        ] + [f"{m['label']}: Hotelling T² p = {m['p_value']:.4f}" for m in mspc if m["flagged"]]
        return {
            "master_file_code": mf.code,
            "by": grouping.value,
            "alpha": alpha,
            "min_cpk": min_cpk,
            "margins_from": "master file" if margins else "none set",
            "batches": len(batches) if own is None else sum(b.site_id == own for b in batches),
            "attributes": out_attributes,
            "mspc": mspc,
            "flagged": flagged,
            "suspensions": suspensions(uow, actor, master_file_code=mf.code),
        }

    def _with_received(
        self, uow: UnitOfWork, code: str, own: list[BatchRecord | ReceivedBatch]
    ) -> list[BatchRecord | ReceivedBatch]:
        """At the control node, the site nodes' made and finished batches of the master file
        added to its own (a batch also in its own tables is counted once, from them), in the
        report's order (finish time, then batch number). Elsewhere, its own."""
        if self.received_batches is None:
            return own
        held = {b.id for b in own}
        added: list[BatchRecord | ReceivedBatch] = []
        for summary in self.received_batches(uow, code):
            batch = ReceivedBatch.of(summary)
            if batch is None:
                log.warning("batch summary %s lacks what the report reads", summary.get("id"))
                continue
            if (
                batch.id in held
                or batch.master_file_code != code
                or batch.status not in MADE
                or batch.finished_at is None
            ):
                continue
            try:
                self._master_files.get(uow, batch.master_file_id)
            except NotFound:  # made under a version this node does not hold
                log.warning("batch %s: master file %s not held", batch.id, batch.master_file_id)
                continue
            held.add(batch.id)
            added.append(batch)
        return sorted([*own, *added], key=_made_order) if added else own

    @staticmethod
    def _group(
        grouping: GroupBy,
        batch: BatchRecord | ReceivedBatch,
        sites: Mapping[str, str],
        machines: Mapping[str, tuple[str, str]],
    ) -> tuple[str, str]:
        if grouping is GroupBy.SITE:
            return batch.site_id, sites.get(batch.site_id, batch.site_id)
        if grouping is GroupBy.MACHINE:
            name = machines.get(batch.machine_id, (batch.machine_id, ""))[0]
            return batch.machine_id, name
        if grouping is GroupBy.MATERIAL_LOT:
            return batch.material_lot_id, batch.material_lot_number
        month = (batch.finished_at or batch.started_at).strftime("%Y-%m")
        return month, month

    def _observe(
        self,
        mf: MasterFile,
        batch: BatchRecord | ReceivedBatch,
        key: str,
        attributes: dict[str, _Attribute],
    ) -> list[float] | None:
        """Add the batch's values to each attribute; its summary vector (measurement mean and
        each CPP's mean), or None when one is missing."""
        vector: list[float] = []
        complete = True
        finished = _iso(batch.finished_at) or ""
        kit = self._families.get(mf.product_family).machines
        series = kit.measurement_series(batch.measurements, batch.design or {}, mf.cqa_specs or {})
        if series is not None and series.target > 0 and series.values:
            attribute = attributes.get(MEASUREMENT_PCT)
            if attribute is None:
                attribute = attributes[MEASUREMENT_PCT] = _Attribute(
                    MEASUREMENT_PCT,
                    f"{series.label} (% of target)",
                    "%",
                    100.0 - series.tolerance_pct if series.tolerance_pct else None,
                    100.0 + series.tolerance_pct if series.tolerance_pct else None,
                )
            pct = [100.0 * v / series.target for v in series.values]
            attribute.values[key].extend(pct)
            mean = sum(pct) / len(pct)
            attribute.points.append((key, batch.batch_number, finished, mean))
            vector.append(mean)
        else:
            complete = False
        summary = batch.telemetry_summary or {}
        for name, limits in sorted((mf.process_parameters or {}).items()):
            entry = summary.get(name)
            if not isinstance(entry, Mapping) or "mean" not in entry:
                complete = False
                continue
            attribute = attributes.get(name)
            if attribute is None:
                attribute = attributes[name] = _Attribute(
                    name,
                    name.replace("_", " "),
                    str(limits.get("unit", "")),
                    float(limits["low"]),
                    float(limits["high"]),
                )
            mean = float(entry["mean"])
            attribute.values[key].append(mean)
            attribute.points.append((key, batch.batch_number, finished, mean))
            vector.append(mean)
        return vector if complete else None

    @staticmethod
    def _attribute(
        attribute: _Attribute,
        margin: float | None,
        alpha: float,
        min_cpk: float,
        labels: Mapping[str, str],
        group_site: Mapping[str, str | None],
        visible: set[str],
    ) -> dict[str, Any]:
        groups = dict(attribute.values)
        try:
            chart = logic.means_chart(groups) if len(groups) >= 2 else None
        except ValidationFailed:
            chart = None
        limits = {p.group: p for p in chart.points} if chart else {}
        rows: list[dict[str, Any]] = []
        for key, values in groups.items():
            if key not in visible:
                continue
            flags: list[str] = []
            point = limits.get(key)
            if point is not None and point.outside:
                flags.append(
                    f"mean {point.mean:.3g} outside the network's limits "
                    f"{point.lcl:.3g}–{point.ucl:.3g}"
                )
            series = [p for p in attribute.points if p[0] == key]
            run_at = None
            if chart is not None:
                index = logic.run_rule([p[3] for p in series], chart.centre)
                if index is not None:
                    run_at = series[index][1]
                    flags.append(
                        f"{logic.RUN_LENGTH} batches in a row on one side of the network mean "
                        f"(at batch {run_at})"
                    )
            rest = [v for k, vs in groups.items() if k != key for v in vs]
            tost = None
            if margin is not None and len(values) >= 2 and len(rest) >= 2:
                try:
                    found = logic.tost(values, rest, float(margin), alpha)
                except ValidationFailed:
                    found = None
                if found is not None:
                    tost = {
                        "difference": found.difference,
                        "margin": found.margin,
                        "ci_low": found.ci_low,
                        "ci_high": found.ci_high,
                        "p_value": found.p_value,
                        "equivalent": found.equivalent,
                    }
                    if not found.equivalent:
                        flags.append(
                            f"not shown equivalent to the rest within ±{found.margin:g} "
                            f"(difference {found.difference:+.3g}, "
                            f"{100 * (1 - 2 * alpha):g} % CI {found.ci_low:+.3g} to "
                            f"{found.ci_high:+.3g})"
                        )
            capability = None
            if (attribute.lsl is not None or attribute.usl is not None) and len(values) >= 3:
                try:
                    cap = logic.site_capability(values, lsl=attribute.lsl, usl=attribute.usl)
                except ValidationFailed:
                    cap = None
                if cap is not None:
                    capability = {
                        "cpk": cap.cpk,
                        "cpk_low": cap.interval.lower,
                        "cpk_high": cap.interval.upper,
                        "lsl": attribute.lsl,
                        "usl": attribute.usl,
                    }
                    # below the wanted Cpk (a wide interval from few batches alone is no flag:
                    # the page shows it)
                    if cap.cpk < min_cpk:
                        flags.append(
                            f"Cpk {cap.cpk:.2f} (95 % CI {cap.interval.lower:.2f}–"
                            f"{cap.interval.upper:.2f}) below {min_cpk:g}"
                        )
            n = len(values)
            mean = sum(values) / n
            sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else None
            rows.append(
                {
                    "group": key,
                    "label": labels[key],
                    "site_id": group_site.get(key),
                    "n": n,
                    "batches": len(series),
                    "mean": mean,
                    "sd": sd,
                    "lcl": point.lcl if point else None,
                    "ucl": point.ucl if point else None,
                    "outside_limits": bool(point and point.outside),
                    "run_of_eight_at": run_at,
                    "tost": tost,
                    "capability": capability,
                    "flags": flags,
                }
            )
        rows.sort(key=lambda r: str(r["label"]))
        return {
            "name": attribute.name,
            "label": attribute.label,
            "unit": attribute.unit,
            "margin": None if margin is None else float(margin),
            "centre": chart.centre if chart else None,
            "sigma": chart.sigma if chart else None,
            "groups": rows,
            "points": [
                {"batch_number": b, "group": labels[g], "finished_at": at, "mean": m}
                for g, b, at, m in attribute.points
                if g in visible
            ],
        }

    @staticmethod
    def _mspc(
        vectors: Mapping[str, list[list[float]]], labels: Mapping[str, str], visible: set[str]
    ) -> list[dict[str, Any]]:
        out = []
        for key, own in vectors.items():
            if key not in visible:
                continue
            rest = [v for k, vs in vectors.items() if k != key for v in vs]
            if not rest:
                continue
            found = logic.hotelling_two_sample(own, rest)
            if found is None:
                continue
            out.append(
                {
                    "group": key,
                    "label": labels[key],
                    "t2": found.t2,
                    "f": found.f,
                    "df1": found.df1,
                    "df2": found.df2,
                    "p_value": found.p_value,
                    "flagged": found.p_value < MSPC_ALPHA,
                }
            )
        return sorted(out, key=lambda m: m["label"])
