"""bioprint's `release` part: implements nearfab.quality.kit.ReleaseKit (and LabResultsKit).

The release tests of one transplant's islet micro-tissues. The batch record's measurement
document's top level is the bioprinter's in-process document (machines.py) and its "qc" object
holds the laboratory's results. Defaults follow the clinical islet product's lot release
criteria of the NIH Clinical Islet Transplantation Consortium (CIT-07, Ricordi et al., Diabetes
2016;65(11):3418-3428, Table 3) unless the master file's CQA specs give a limit:

- donor_isolation: the islet isolation lot the print drew names the order's donor (its DIN is
  the design's, ISBT 128), with purity ≥ 30 % (Adv Med 2014, doi:10.1155/2014/429710, Table 2)
  and viability ≥ 70 %;
- ieq_dose: IEQ ÷ the recipient's weight, at least 5,000 IEQ/kg (CIT-07 first infusion) and
  within the master file's % band of the prescribed dose (default 80-120 %);
- viability: FDA/PI viability ≥ 70 % (CIT-07);
- potency: glucose-stimulated insulin secretion, stimulation index = insulin released at high
  glucose ÷ insulin released at low glucose (the same units), above 1 (CIT-07 "GSIR ...
  stimulation index >1"), or at least the master file's `potency.min_stimulation_index`;
- endotoxin: EU/mL × bioink volume ÷ weight ≤ 5 EU/kg (CIT-07);
- sterility: no growth (21 CFR 610.12 in CIT-07); reads days after the transplant, so it may be
  pending at release (`pending_at_release`) and is followed up by quality.

The material lots: the donor's islet isolation (DIN, IEQ, purity, viability) and bioink.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.families.bioprint.prescription import MIN_IEQ_PER_KG
from nearfab.families.inprocess import check_in_process
from nearfab.families.isbt128 import Isbt128Invalid, parse_din
from nearfab.quality.kit import Check, ReleaseEvidence, ReleaseResults

TESTS: dict[str, str] = {
    "donor_isolation": "Donor islet isolation (DIN, purity, viability)",
    "ieq_dose": "Islet equivalents per kg of recipient",
    "viability": "Viability",
    "potency": "Potency (glucose-stimulated insulin secretion)",
    "endotoxin": "Endotoxin",
    "sterility": "Sterility",
}
PENDING_AT_RELEASE: frozenset[str] = frozenset({"sterility"})
IN_PROCESS_ALLOWED: tuple[str, ...] = ("ieq_dose", "viability")

DEFAULT_DOSE_BAND_PCT = (80.0, 120.0)
DEFAULT_MIN_VIABILITY = 0.70
DEFAULT_MIN_PURITY = 0.30
DEFAULT_MAX_ENDOTOXIN_EU_PER_KG = 5.0
QC = "qc"
_NEGATIVE, _POSITIVE, _PENDING = "negative", "positive", "pending"
_EPS = 1e-9

LAB_RESULT_KEYS: dict[str, str] = {
    "ieq": "islet equivalents in the constructs (DTZ count), a number",
    "viability": "viability by FDA/PI staining, fraction (0-1)",
    "insulin_low_glucose": "insulin released in low glucose (e.g. 2.8 mM), any unit",
    "insulin_high_glucose": "insulin released in high glucose (e.g. 16.7 mM), same unit",
    "endotoxin_eu_per_ml": "bacterial endotoxins (LAL), EU/mL",
    "sterility": "sterility: negative or positive",
}

LOT_KINDS = ("islet_isolation", "bioink")
ISOLATION_KEYS = ("kind", "din", "ieq", "purity", "viability")
BIOINK_KEYS = ("kind", "composition", "grade", "sterility_certificate")
LOT_GRADES = ("gmp", "clinical")
_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 %./_+-]{0,63}")


def _number(document: Mapping[str, Any], key: str, field: str) -> float | None:
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationFailed(f"{field} must be a finite number, got {value!r}", field=field)
    if value < 0:
        raise ValidationFailed(f"{field} cannot be negative, got {value!r}", field=field)
    return float(value)


def _fraction(document: Mapping[str, Any], key: str, field: str) -> float | None:
    value = _number(document, key, field)
    if value is not None and value > 1:
        raise ValidationFailed(f"{field} is a fraction (0-1), got {value!r}", field=field)
    return value


def _positive(document: Mapping[str, Any], key: str, field: str) -> float:
    value = _number(document, key, field)
    if value is None or value <= 0:
        raise ValidationFailed(f"{field} must be a positive number, got {value!r}", field=field)
    return value


def _spec(specs: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    spec = specs.get(key) or {}
    if not isinstance(spec, Mapping):
        raise ValidationFailed(f"cqa_specs.{key} must be an object", field=f"cqa_specs.{key}")
    return spec


def _section(measurements: Mapping[str, Any]) -> Mapping[str, Any]:
    section = measurements.get(QC) or {}
    if not isinstance(section, Mapping):
        raise ValidationFailed("measurements.qc must be an object", field="measurements.qc")
    return section


def stimulation_index(insulin_low: float, insulin_high: float) -> float:
    """Glucose-stimulated insulin secretion: insulin at high glucose ÷ insulin at low glucose."""
    if not insulin_low > 0:
        raise ValidationFailed(
            "insulin_low_glucose must be above 0 to divide by it",
            field="measurements.qc.insulin_low_glucose",
        )
    return insulin_high / insulin_low


class BioprintRelease:
    """Release tests of islet micro-tissues; the attributes of its material lots."""

    tests: Mapping[str, str] = TESTS
    pending_at_release: frozenset[str] = PENDING_AT_RELEASE
    exceptional_release_only: bool = True
    lab_result_keys: Mapping[str, str] = LAB_RESULT_KEYS

    def check_rule(self, rule: Mapping[str, Any]) -> None:
        """`release_rule.in_process`: ieq_dose and viability only (from the bioprinter's
        in-process counts when the laboratory has not reported)."""
        check_in_process(rule, IN_PROCESS_ALLOWED)

    def evaluate(
        self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        qc = _section(evidence.measurements)
        allowed = tuple(rule.get("in_process") or ())
        weight = _positive(evidence.design, "body_weight_kg", "body_weight_kg")
        runners = {
            "donor_isolation": lambda: self._donor(evidence),
            "ieq_dose": lambda: self._dose(qc, evidence, allowed, weight),
            "viability": lambda: self._viability(qc, evidence, allowed),
            "potency": lambda: self._potency(qc, evidence.specs),
            "endotoxin": lambda: self._endotoxin(qc, evidence, weight),
            "sterility": lambda: self._sterility(qc),
        }
        return ReleaseResults(checks=tuple(runners[n]() for n in TESTS if n in tests))

    @staticmethod
    def _donor(evidence: ReleaseEvidence) -> Check:
        lot = evidence.material
        if lot.get("kind") != "islet_isolation":
            return Check("donor_isolation", None, "donor isolation: the lot is not an isolation")
        want, got = evidence.design.get("din"), lot.get("din")
        if not want or not got:
            return Check("donor_isolation", None, "donor isolation: no DIN to compare")
        ok, parts = True, []
        if parse_din(str(want)).din != parse_din(str(got)).din:
            ok = False
            parts.append(
                f"the lot's DIN {parse_din(str(got)).eye_readable()} is not the order's donor"
                f" {parse_din(str(want)).eye_readable()}"
            )
        else:
            parts.append(f"DIN {parse_din(str(got)).eye_readable()} is the order's donor")
        purity = _fraction(lot, "purity", "material.purity") or 0.0
        minimum = _fraction(_spec(evidence.specs, "purity"), "min", "cqa_specs.purity.min")
        minimum = DEFAULT_MIN_PURITY if minimum is None else minimum
        passed = purity >= minimum - _EPS
        ok = ok and passed
        parts.append(f"purity {purity:.0%} {'≥' if passed else '<'} {minimum:.0%}")
        alive = _fraction(lot, "viability", "material.viability") or 0.0
        passed = alive >= DEFAULT_MIN_VIABILITY - _EPS
        ok = ok and passed
        sign = "≥" if passed else "<"
        parts.append(f"isolation viability {alive:.0%} {sign} {DEFAULT_MIN_VIABILITY:.0%}")
        return Check("donor_isolation", ok, "donor isolation: " + "; ".join(parts))

    @staticmethod
    def _dose(
        qc: Mapping[str, Any], evidence: ReleaseEvidence, allowed: Sequence[str], weight: float
    ) -> Check:
        if qc.get("ieq") is None and "ieq_dose" in allowed:
            total, source = (
                _number(evidence.measurements, "ieq_printed", "measurements.ieq_printed"),
                " (in-process data)",
            )
        else:
            total, source = _number(qc, "ieq", "measurements.qc.ieq"), ""
        if total is None:
            return Check("ieq_dose", None, "IEQ dose: no islet count")
        prescribed = _positive(evidence.design, "dose_per_kg", "dose_per_kg")
        spec = _spec(evidence.specs, "dose")
        low_pct = _number(spec, "min_pct", "cqa_specs.dose.min_pct")
        high_pct = _number(spec, "max_pct", "cqa_specs.dose.max_pct")
        low_pct = DEFAULT_DOSE_BAND_PCT[0] if low_pct is None else low_pct
        high_pct = DEFAULT_DOSE_BAND_PCT[1] if high_pct is None else high_pct
        floor = _number(spec, "min_per_kg", "cqa_specs.dose.min_per_kg")
        floor = max(MIN_IEQ_PER_KG, floor or 0.0)
        per_kg = total / weight
        pct = per_kg / prescribed * 100
        ok = low_pct - _EPS <= pct <= high_pct + _EPS and per_kg >= floor * (1 - _EPS)
        detail = (
            f"IEQ dose{source}: {total:,.0f} IEQ ÷ {weight:g} kg = {per_kg:,.0f} IEQ/kg,"
            f" {pct:.1f} % of the prescribed {prescribed:,.0f} IEQ/kg (allowed"
            f" {low_pct:g}-{high_pct:g} %, at least {floor:,.0f} IEQ/kg)"
        )
        return Check("ieq_dose", ok, detail)

    @staticmethod
    def _viability(
        qc: Mapping[str, Any], evidence: ReleaseEvidence, allowed: Sequence[str]
    ) -> Check:
        if qc.get("viability") is None and "viability" in allowed:
            value, source = (
                _fraction(evidence.measurements, "viability", "measurements.viability"),
                " (in-process data)",
            )
        else:
            value, source = _fraction(qc, "viability", "measurements.qc.viability"), ""
        if value is None:
            return Check("viability", None, "viability: no result")
        minimum = _fraction(_spec(evidence.specs, "viability"), "min", "cqa_specs.viability.min")
        minimum = DEFAULT_MIN_VIABILITY if minimum is None else minimum
        ok = value >= minimum - _EPS
        return Check(
            "viability", ok, f"viability{source}: {value:.1%} {'≥' if ok else '<'} {minimum:.1%}"
        )

    @staticmethod
    def _potency(qc: Mapping[str, Any], specs: Mapping[str, Any]) -> Check:
        low = _number(qc, "insulin_low_glucose", "measurements.qc.insulin_low_glucose")
        high = _number(qc, "insulin_high_glucose", "measurements.qc.insulin_high_glucose")
        if low is None or high is None:
            return Check("potency", None, "potency: no insulin secretion result")
        index = stimulation_index(low, high)
        minimum = _number(
            _spec(specs, "potency"),
            "min_stimulation_index",
            "cqa_specs.potency.min_stimulation_index",
        )
        if minimum is None:  # CIT-07: stimulation index > 1
            ok, rule = index > 1.0 + _EPS, "> 1"
        else:
            ok, rule = index >= minimum - _EPS, f"≥ {minimum:g}"
        return Check(
            "potency",
            ok,
            f"potency: stimulation index {high:g} ÷ {low:g} = {index:.2f}"
            f" ({'meets' if ok else 'fails'} {rule})",
        )

    @staticmethod
    def _endotoxin(qc: Mapping[str, Any], evidence: ReleaseEvidence, weight: float) -> Check:
        per_ml = _number(qc, "endotoxin_eu_per_ml", "measurements.qc.endotoxin_eu_per_ml")
        if per_ml is None:
            return Check("endotoxin", None, "endotoxin: no result")
        volume = _positive(evidence.design, "bioink_ml", "bioink_ml")
        limit = _number(
            _spec(evidence.specs, "endotoxin"), "max_eu_per_kg", "cqa_specs.endotoxin.max_eu_per_kg"
        )
        limit = DEFAULT_MAX_ENDOTOXIN_EU_PER_KG if limit is None else limit
        per_kg = per_ml * volume / weight
        ok = per_kg <= limit + _EPS
        return Check(
            "endotoxin",
            ok,
            f"endotoxin: {per_ml:g} EU/mL × {volume:g} mL ÷ {weight:g} kg = {per_kg:.3f} EU/kg"
            f" {'≤' if ok else '>'} {limit:g} EU/kg",
        )

    @staticmethod
    def _sterility(qc: Mapping[str, Any]) -> Check:
        result = qc.get("sterility")
        if result in (None, _PENDING):
            return Check("sterility", None, "sterility: result pending (culture still reading)")
        if result not in (_NEGATIVE, _POSITIVE):
            raise ValidationFailed(
                f"measurements.qc.sterility is {result!r}; expected negative, positive or pending",
                field="measurements.qc.sterility",
            )
        return Check("sterility", result == _NEGATIVE, f"sterility: {result}")

    # --- quality.kit.LabResultsKit ---

    def check_lab_results(self, results: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in results.items():
            field = f"lab_results.{key}"
            if key not in LAB_RESULT_KEYS:
                raise ValidationFailed(
                    f"{field} is not a result of this product's laboratory;"
                    f" known: {', '.join(LAB_RESULT_KEYS)}",
                    field=field,
                )
            if value is None:
                raise ValidationFailed(f"{field} has no value", field=field)
            if key == "sterility":
                if value not in (_NEGATIVE, _POSITIVE):
                    raise ValidationFailed(
                        f"{field} is {value!r}; a laboratory result is negative or positive",
                        field=field,
                    )
                out[key] = value
            elif key == "viability":
                out[key] = _fraction({key: value}, key, field)
            else:
                out[key] = _number({key: value}, key, field)
        return out

    def with_lab_results(
        self, measurements: Mapping[str, Any], results: Mapping[str, Any]
    ) -> dict[str, Any]:
        qc = dict(_section(measurements))
        qc.update(results)
        return {**measurements, QC: qc}

    # --- material lots ---

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """An islet isolation {kind, din, ieq, purity, viability} or a bioink lot {kind,
        composition, grade, sterility_certificate}; ValidationFailed naming attributes.<key>."""
        if not isinstance(attributes, Mapping):
            raise ValidationFailed("attributes must be an object", field="attributes")
        kind = attributes.get("kind")
        if kind not in LOT_KINDS:
            raise ValidationFailed(
                f"attributes.kind is {kind!r}; expected one of {', '.join(LOT_KINDS)}",
                field="attributes.kind",
            )
        keys = ISOLATION_KEYS if kind == "islet_isolation" else BIOINK_KEYS
        unknown = [str(k) for k in attributes if k not in keys]
        if unknown:
            raise ValidationFailed(
                f"attributes.{unknown[0]} is not an attribute of a {kind} lot;"
                f" known: {', '.join(keys)}",
                field=f"attributes.{unknown[0]}",
            )
        missing = [k for k in keys if attributes.get(k) is None]
        if missing:
            raise ValidationFailed(
                f"attributes.{missing[0]} is required for a {kind} lot",
                field=f"attributes.{missing[0]}",
            )
        if kind == "islet_isolation":
            try:
                din = parse_din(str(attributes["din"])).scanned()
            except Isbt128Invalid as exc:
                raise ValidationFailed(
                    f"attributes.din: {exc.message}", field="attributes.din"
                ) from exc
            ieq = _positive(attributes, "ieq", "attributes.ieq")
            purity = _fraction(attributes, "purity", "attributes.purity")
            viability = _fraction(attributes, "viability", "attributes.viability")
            return {"kind": kind, "din": din, "ieq": ieq, "purity": purity, "viability": viability}
        if attributes["grade"] not in LOT_GRADES:
            raise ValidationFailed(
                f"attributes.grade is {attributes['grade']!r}; a bioink for a transplant is of"
                f" grade {' or '.join(LOT_GRADES)}",
                field="attributes.grade",
            )
        for key in ("composition", "sterility_certificate"):
            if not isinstance(attributes[key], str) or not _TEXT.fullmatch(attributes[key]):
                raise ValidationFailed(
                    f"attributes.{key} must be 1-64 letters, digits, space % . / _ + -",
                    field=f"attributes.{key}",
                )
        return {key: attributes[key] for key in BIOINK_KEYS}
