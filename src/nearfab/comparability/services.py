"""Comparability use cases: the cross-site report, proficiency rounds, suspensions and CAPA.

Every state change (a round opened, a result entered, a round scored, a site suspended, a
suspension lifted) goes through this service with its audit row in the same transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from nearfab.common.errors import Conflict, NotFound, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.comparability import logic
from nearfab.comparability.enums import (
    ROUND_TRANSITIONS,
    SUSPENSION_TRANSITIONS,
    GroupBy,
    RoundStatus,
    SuspensionStatus,
)
from nearfab.comparability.models import ProficiencyResult, ProficiencyRound, Suspension
from nearfab.comparability.schemas import CapaCloseIn, ResultIn, RoundIn
from nearfab.designs import FamilyRegistry
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    audited_transition,
    authorize,
    authorize_network,
    is_network_wide,
    site_filter,
)
from nearfab.masterfiles import MasterFile, MasterFileService, pydantic_to_domain
from nearfab.masterfiles.schemas import MEASUREMENT_PCT
from nearfab.network import NetworkService
from nearfab.production import BatchRecord
from nearfab.uow import UnitOfWork

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


class ComparabilityService:
    def __init__(
        self,
        network: NetworkService,
        master_files: MasterFileService,
        families: FamilyRegistry,
        signatures: SignatureService,
    ) -> None:
        self._network = network
        self._master_files = master_files
        self._families = families
        self._signatures = signatures

    # --- the hold production and scheduling ask through the network (wired in bootstrap) -----
    def suspension_reason(self, uow: UnitOfWork, site_id: str, master_file_code: str) -> str | None:
        """Why the site may not make the master file (an active proficiency suspension), or
        None."""
        row = uow.session.scalar(
            select(Suspension).where(
                Suspension.site_id == site_id,
                Suspension.master_file_code == master_file_code,
                Suspension.status == SuspensionStatus.ACTIVE.value,
            )
        )
        if row is None:
            return None
        return (
            f"site suspended from {master_file_code} by proficiency round {row.round_id} "
            f"(z = {row.z:.2f}) until its CAPA is closed"
        )

    # --- the cross-site report ----------------------------------------------------------------
    def report(
        self, uow: UnitOfWork, actor: Actor, master_file_code: str, by: str = "site"
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
        batches = list(
            uow.session.scalars(
                select(BatchRecord)
                .where(
                    BatchRecord.master_file_code == mf.code,
                    BatchRecord.status.in_(MADE),
                    BatchRecord.finished_at.is_not(None),
                )
                .order_by(BatchRecord.finished_at, BatchRecord.batch_number)
            )
        )
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
            site = batch.site_id if grouping is not GroupBy.MONTH else None
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
            "suspensions": self.suspensions(uow, actor, master_file_code=mf.code),
        }

    @staticmethod
    def _group(
        grouping: GroupBy,
        batch: BatchRecord,
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
        self, mf: MasterFile, batch: BatchRecord, key: str, attributes: dict[str, _Attribute]
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
                    if cap.interval.lower < min_cpk:
                        flags.append(
                            f"Cpk {cap.cpk:.2f} (95 % CI {cap.interval.lower:.2f}–"
                            f"{cap.interval.upper:.2f}) not shown above {min_cpk:g}"
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

    # --- proficiency rounds --------------------------------------------------------------------
    def open_round(
        self, uow: UnitOfWork, actor: Actor, data: Mapping[str, Any]
    ) -> ProficiencyRound:
        """The control site sends blind reference samples (or prints) to the sites named."""
        authorize_network(actor, Permission.PROFICIENCY_ROUND)
        try:
            spec = RoundIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "round") from None
        mf = self._master_files.effective_for_code(uow, spec.master_file_code)
        site_ids = []
        for i, name in enumerate(spec.site_ids):
            try:
                site_ids.append(self._network.get_site(uow, name).id)
            except NotFound:
                raise ValidationFailed(
                    f"site_ids[{i}]: no site {name!r}", field=f"site_ids.{i}"
                ) from None
        if len(set(site_ids)) != len(site_ids):
            raise ValidationFailed("a site is named twice", field="site_ids")
        row = ProficiencyRound(
            id=new_id("ptr"),
            master_file_code=mf.code,
            attribute=spec.attribute,
            unit=spec.unit,
            reference=spec.reference,
            site_ids=site_ids,
            assigned_value=spec.assigned_value,
            sd_pt=spec.sd_pt,
            status=RoundStatus.OPEN.value,
            opened_at=uow.clock.now(),
            opened_by=actor.user_id,
            scored_at=None,
            scored_by=None,
            robust_mean=None,
            robust_sd=None,
        )
        uow.session.add(row)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "proficiency_round",
            row.id,
            new={**spec.model_dump(), "site_ids": site_ids},
            reason=f"proficiency round for {mf.code}",
        )
        uow.commit()
        return row

    def _round(self, uow: UnitOfWork, round_id: str) -> ProficiencyRound:
        row = uow.session.get(ProficiencyRound, round_id)
        if row is None:
            raise NotFound(f"no proficiency round {round_id}", field="round_id")
        return row

    def enter_result(
        self, uow: UnitOfWork, actor: Actor, round_id: str, data: Mapping[str, Any]
    ) -> ProficiencyResult:
        """A site reports what it measured on the blind sample (once)."""
        authorize(actor, Permission.PROFICIENCY_RESULT_ENTER)
        try:
            spec = ResultIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "result") from None
        round_ = self._round(uow, round_id)
        site = self._network.get_site(uow, spec.site_id)
        authorize(actor, Permission.PROFICIENCY_RESULT_ENTER, site_id=site.id)
        if site.id not in round_.site_ids:
            raise Refused(
                f"site {site.code} takes no part in this round",
                field="site_id",
                code="not_in_round",
            )
        if round_.status != RoundStatus.OPEN.value:
            raise Refused(
                f"the round is {round_.status}; results are entered while it is open",
                field="round_id",
                code="round_closed",
            )
        if not (spec.value == spec.value and abs(spec.value) != float("inf")):
            raise ValidationFailed("value must be a finite number", field="value")
        existing = uow.session.scalar(
            select(ProficiencyResult).where(
                ProficiencyResult.round_id == round_.id, ProficiencyResult.site_id == site.id
            )
        )
        if existing is not None:
            raise Conflict(
                f"site {site.code} has already reported {existing.value:g} for this round",
                field="site_id",
            )
        row = ProficiencyResult(
            id=new_id("ptres"),
            round_id=round_.id,
            site_id=site.id,
            value=float(spec.value),
            entered_at=uow.clock.now(),
            entered_by=actor.user_id,
            z=None,
            verdict=None,
        )
        uow.session.add(row)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "proficiency_result",
            row.id,
            new={"round_id": round_.id, "site_id": site.id, "value": row.value},
            site_id=site.id,
        )
        uow.commit()
        return row

    def score_round(self, uow: UnitOfWork, actor: Actor, round_id: str) -> ProficiencyRound:
        """ISO 13528 z-scores (x_pt, σ_pt: the round's, else Algorithm A's x*, s*); every site
        with |z| > 3 is suspended from the master file until its CAPA is closed."""
        authorize_network(actor, Permission.PROFICIENCY_ROUND)
        round_ = self._round(uow, round_id)
        results = list(
            uow.session.scalars(
                select(ProficiencyResult).where(ProficiencyResult.round_id == round_.id)
            )
        )
        if len(results) < 3:
            raise Refused(
                f"{len(results)} result(s) in: scoring needs at least 3",
                field="round_id",
                code="too_few_results",
            )
        robust = logic.algorithm_a([r.value for r in results])
        assigned = round_.assigned_value if round_.assigned_value is not None else robust.mean
        sd_pt = round_.sd_pt if round_.sd_pt is not None else robust.sd
        zs = logic.z_scores([r.value for r in results], assigned, sd_pt)
        audited_transition(
            uow,
            actor,
            round_,
            RoundStatus.SCORED,
            ROUND_TRANSITIONS,
            entity_type="proficiency_round",
            label="proficiency round",
            reason="scored with ISO 13528 z-scores",
            extra={"x_pt": assigned, "sd_pt": sd_pt, "robust_mean": robust.mean},
        )
        round_.robust_mean, round_.robust_sd = robust.mean, robust.sd
        round_.scored_at, round_.scored_by = uow.clock.now(), actor.user_id
        for result, z in zip(results, zs, strict=True):
            result.z, result.verdict = z, logic.z_verdict(z)
            if (
                abs(z) > 3.0
                and self.suspension_reason(uow, result.site_id, round_.master_file_code) is None
            ):
                row = Suspension(
                    id=new_id("susp"),
                    site_id=result.site_id,
                    master_file_code=round_.master_file_code,
                    round_id=round_.id,
                    z=z,
                    status=SuspensionStatus.ACTIVE.value,
                    opened_at=uow.clock.now(),
                    capa_reference=None,
                    capa_summary=None,
                    closed_at=None,
                    closed_by=None,
                    signature_id=None,
                )
                uow.session.add(row)
                audit(
                    uow,
                    actor,
                    AuditAction.CREATE,
                    "proficiency_suspension",
                    row.id,
                    new={
                        "site_id": row.site_id,
                        "master_file_code": row.master_file_code,
                        "round_id": round_.id,
                        "z": z,
                    },
                    reason=f"|z| = {abs(z):.2f} > 3 in proficiency round {round_.id}",
                    site_id=row.site_id,
                )
        uow.commit()
        return round_

    def close_capa(
        self, uow: UnitOfWork, actor: Actor, suspension_id: str, data: Mapping[str, Any]
    ) -> Suspension:
        """The control site's QP closes the site's CAPA with an e-signature: the suspension is
        lifted and the site may make the master file again."""
        authorize_network(actor, Permission.PROFICIENCY_CAPA_CLOSE)
        try:
            spec = CapaCloseIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "capa") from None
        row = uow.session.get(Suspension, suspension_id)
        if row is None:
            raise NotFound(f"no suspension {suspension_id}", field="suspension_id")
        if row.status != SuspensionStatus.ACTIVE.value:
            raise Refused("the suspension is already lifted", field="status", code="lifted")
        signature = self._signatures.sign(
            uow,
            actor,
            password=spec.password,
            meaning=spec.meaning,
            username=spec.username,
            totp=spec.totp,
            record_type="proficiency_suspension",
            record_id=row.id,
            content={
                "site_id": row.site_id,
                "master_file_code": row.master_file_code,
                "round_id": row.round_id,
                "capa_reference": spec.capa_reference,
                "summary": spec.summary,
            },
            site_id=row.site_id,
        )
        audited_transition(
            uow,
            actor,
            row,
            SuspensionStatus.LIFTED,
            SUSPENSION_TRANSITIONS,
            entity_type="proficiency_suspension",
            label="suspension",
            reason=f"CAPA {spec.capa_reference} closed",
            site_id=row.site_id,
            extra={"capa_reference": spec.capa_reference, "signature_id": signature.id},
        )
        row.capa_reference, row.capa_summary = spec.capa_reference, spec.summary
        row.closed_at, row.closed_by, row.signature_id = (
            uow.clock.now(),
            actor.user_id,
            signature.id,
        )
        uow.commit()
        return row

    # --- reads ---------------------------------------------------------------------------------
    def rounds(self, uow: UnitOfWork, actor: Actor) -> list[dict[str, Any]]:
        """The rounds the actor's site takes part in (every round for the network), each with
        the results the actor may see (their own site's; every site's for the network)."""
        authorize(actor, Permission.COMPARABILITY_READ)
        rows = uow.session.scalars(
            select(ProficiencyRound).order_by(ProficiencyRound.opened_at.desc())
        )
        wide = is_network_wide(actor, Permission.COMPARABILITY_READ)
        return [
            self._round_dict(uow, actor, r)
            for r in rows
            if wide or actor.site_id in (r.site_ids or [])
        ]

    def round(self, uow: UnitOfWork, actor: Actor, round_id: str) -> dict[str, Any]:
        row = self._round(uow, round_id)
        authorize(actor, Permission.COMPARABILITY_READ, one_of=row.site_ids)
        return self._round_dict(uow, actor, row)

    def _round_dict(self, uow: UnitOfWork, actor: Actor, row: ProficiencyRound) -> dict[str, Any]:
        wide = is_network_wide(actor, Permission.COMPARABILITY_READ)
        codes = {s.id: s.code for s in self._network.list_sites(uow)}
        results = uow.session.scalars(
            select(ProficiencyResult)
            .where(ProficiencyResult.round_id == row.id)
            .order_by(ProficiencyResult.entered_at)
        )
        return {
            "id": row.id,
            "master_file_code": row.master_file_code,
            "attribute": row.attribute,
            "unit": row.unit,
            "reference": row.reference,
            "site_ids": list(row.site_ids or []),
            "status": row.status,
            "assigned_value": row.assigned_value,
            "sd_pt": row.sd_pt,
            "robust_mean": row.robust_mean,
            "robust_sd": row.robust_sd,
            "opened_at": _iso(row.opened_at),
            "scored_at": _iso(row.scored_at),
            "results": [
                {
                    "id": r.id,
                    "site_id": r.site_id,
                    "site_code": codes.get(r.site_id, r.site_id),
                    "value": r.value,
                    "entered_at": _iso(r.entered_at),
                    "entered_by": r.entered_by,
                    "z": r.z,
                    "verdict": r.verdict,
                }
                for r in results
                if wide or r.site_id == actor.site_id
            ],
        }

    def suspensions(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        site_id: str | None = None,
        master_file_code: str | None = None,
    ) -> list[dict[str, Any]]:
        """Suspensions (active and lifted), of the actor's own site for site staff."""
        scope = site_filter(actor, Permission.COMPARABILITY_READ, site_id)
        stmt = select(Suspension).order_by(Suspension.opened_at.desc())
        if scope is not None:
            stmt = stmt.where(Suspension.site_id == scope)
        if master_file_code is not None:
            stmt = stmt.where(Suspension.master_file_code == master_file_code)
        codes = {s.id: s.code for s in self._network.list_sites(uow)}
        return [
            {
                "id": s.id,
                "site_id": s.site_id,
                "site_code": codes.get(s.site_id, s.site_id),
                "master_file_code": s.master_file_code,
                "round_id": s.round_id,
                "z": s.z,
                "status": s.status,
                "opened_at": _iso(s.opened_at),
                "capa_reference": s.capa_reference,
                "capa_summary": s.capa_summary,
                "closed_at": _iso(s.closed_at),
                "closed_by": s.closed_by,
                "signature_id": s.signature_id,
            }
            for s in uow.session.scalars(stmt)
        ]
