"""cell_therapy's `release` part: implements nearfab.quality.kit.ReleaseKit.

The release tests of an autologous cell product (one bag set per patient). The batch record's
measurement document has two parts: its top level is the micro-factory's in-process document
(viable_cells, viability, ... : docs/cell-therapy.md) and its "qc" object holds the QC
laboratory's results (viable_cells, viability, markers, endotoxin_eu_per_ml, mycoplasma,
sterility). The tests read the laboratory's results; where the master file's release rule lists a
test in `in_process` (viable_cell_dose, viability only), a missing laboratory result is taken
from the in-process document (real-time release).

- viable cell dose: total viable cells ÷ the patient's body weight = cells/kg, against the
  prescribed dose (design `dose_per_kg`; within the master file's % band, default 80-120 %) and
  the master file's absolute range in cells/kg when it gives one;
- viability: the fraction of viable nucleated cells, at least the master file's minimum (else
  the design's `viability_min`, else 0.70);
- identity and purity markers: each marker the master file names (default CD3+ ≥ 0.80), as a
  fraction of viable cells by flow cytometry;
- endotoxin: EU/mL × infusion volume ÷ body weight = EU/kg, at most the master file's limit
  (default 5 EU/kg: Ph. Eur. 5.1.10, threshold pyrogenic dose K, parenteral non-intrathecal);
- mycoplasma: "negative" (Ph. Eur. 2.6.7, NAT); no result cannot be evaluated;
- sterility: "negative" (Ph. Eur. 2.6.27): the culture reads days after infusion, so the
  family allows it to be pending at release (`pending_at_release`); "positive" fails.

Also the schema of the attributes of a material lot (media, reagents, cytokines, vectors,
cryoprotectant): kind, grade, sterility certificate, optional endotoxin.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.families.inprocess import check_in_process
from nearfab.quality.kit import Check, ReleaseEvidence, ReleaseResults

# --- the tests ---------------------------------------------------------------------------------

# the release tests a master file's release rule may list, in the order they are evaluated
TESTS: dict[str, str] = {
    "viable_cell_dose": "Viable cell dose (cells/kg)",
    "viability": "Viability",
    "identity_purity": "Identity and purity markers",
    "endotoxin": "Endotoxin",
    "mycoplasma": "Mycoplasma",
    "sterility": "Sterility",
}
# tests whose result may come after release: released with the result pending, then followed up
PENDING_AT_RELEASE: frozenset[str] = frozenset({"sterility"})
# tests the rule may let the family evaluate from the micro-factory's in-process data when the
# laboratory result is not there (real-time release): the in-line viable density and viability.
# Endotoxin, mycoplasma and sterility need their compendial methods: never from process data.
IN_PROCESS_ALLOWED: tuple[str, ...] = ("viable_cell_dose", "viability")

# defaults when the master file's CQA specifications give none
DEFAULT_DOSE_BAND_PCT = (80.0, 120.0)  # delivered dose in % of the prescribed dose
DEFAULT_MIN_VIABILITY = 0.70  # fraction of nucleated cells
DEFAULT_MARKERS: dict[str, float] = {"CD3+": 0.80}  # marker -> minimum fraction of viable cells
DEFAULT_MAX_ENDOTOXIN_EU_PER_KG = 5.0

# the measurement document's section of laboratory results (its top level is the
# micro-factory's in-process document) and the design's keys this part reads
QC = "qc"
DESIGN_DOSE = "dose_per_kg"
DESIGN_WEIGHT = "body_weight_kg"
DESIGN_VOLUME = "infusion_volume_ml"

_NEGATIVE, _POSITIVE, _PENDING = "negative", "positive", "pending"
_EPS = 1e-9

# the results the QC laboratory enters (quality.labresults): the keys of the measurement
# document's "qc" object, what each holds
LAB_RESULT_KEYS: dict[str, str] = {
    "viable_cells": "total viable cells in the product (all bags), a count",
    "viability": "fraction of viable nucleated cells (0-1)",
    "markers": "identity and purity by flow cytometry: {marker: fraction of viable cells}, e.g."
    ' {"CD3+": 0.92}',
    "endotoxin_eu_per_ml": "bacterial endotoxins (Ph. Eur. 2.6.14), EU/mL",
    "mycoplasma": "mycoplasma (Ph. Eur. 2.6.7): negative or positive",
    "sterility": "sterility (Ph. Eur. 2.6.27): negative or positive",
}
MAX_MARKERS = 40  # markers in one flow cytometry panel
_MARKER = re.compile(r"[A-Za-z0-9][A-Za-z0-9+/._ -]{0,31}")

# --- the material lots' attributes -------------------------------------------------------------

LOT_KINDS = ("medium", "reagent", "cytokine", "vector", "activation_beads", "cryoprotectant")
LOT_GRADES = ("gmp", "clinical")  # Ph. Eur. 5.2.12: ancillary materials of suitable quality
LOT_ATTRIBUTES = ("kind", "grade", "sterility_certificate", "endotoxin_eu_per_ml")
_CERTIFICATE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ./_-]{0,63}")


# --- reading the documents ---------------------------------------------------------------------


def _finite(value: float) -> bool:
    """math.isfinite, False for an integer too large for a float (it raises OverflowError)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(document: Mapping[str, Any], key: str, field: str) -> float | None:
    """A finite number ≥ 0 at `key`, None when absent; ValidationFailed naming `field`."""
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise ValidationFailed(
            f"{field} must be a finite number, got {repr(value)[:40]}", field=field
        )
    if value < 0:
        raise ValidationFailed(f"{field} cannot be negative, got {value!r}", field=field)
    return float(value)


def _positive(document: Mapping[str, Any], key: str, field: str) -> float:
    value = _number(document, key, field)
    if value is None or value <= 0:
        raise ValidationFailed(f"{field} must be a positive number, got {value!r}", field=field)
    return value


def _fraction(document: Mapping[str, Any], key: str, field: str) -> float | None:
    value = _number(document, key, field)
    if value is not None and value > 1:
        raise ValidationFailed(f"{field} is a fraction (0-1), got {value!r}", field=field)
    return value


def _section(measurements: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = measurements.get(key) or {}
    if not isinstance(section, Mapping):
        raise ValidationFailed(f"measurements.{key} must be an object", field=f"measurements.{key}")
    return section


def _outcome(document: Mapping[str, Any], key: str, field: str) -> str | None:
    """ "negative", "positive", "pending" or None (absent)."""
    value = document.get(key)
    if value is None:
        return None
    if value not in (_NEGATIVE, _POSITIVE, _PENDING):
        raise ValidationFailed(
            f"{field} is {value!r}; expected negative, positive or pending", field=field
        )
    return str(value)


def _spec(specs: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    spec = specs.get(key) or {}
    if not isinstance(spec, Mapping):
        raise ValidationFailed(f"cqa_specs.{key} must be an object", field=f"cqa_specs.{key}")
    return spec


def _sci(value: float) -> str:
    """Cells in scientific notation as people write them: 2.50e+08 -> "2.50 × 10^8"."""
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    return f"{value / 10**exponent:.2f} × 10^{exponent}"


# --- the family's release part -----------------------------------------------------------------


class CellTherapyRelease:
    """Release tests of an autologous cell product; its material lots' attributes."""

    tests: Mapping[str, str] = TESTS
    # read by quality (quality.kit.pending_tests, exceptional_only): sterility may be pending at
    # release; a batch out of specification is released only exceptionally (physician + QP)
    pending_at_release: frozenset[str] = PENDING_AT_RELEASE
    exceptional_release_only: bool = True

    def check_rule(self, rule: Mapping[str, Any]) -> None:
        """`release_rule.in_process`: tests the family may evaluate from the micro-factory's
        in-process data when the laboratory result is absent (only viable_cell_dose and
        viability)."""
        check_in_process(rule, IN_PROCESS_ALLOWED)

    def evaluate(
        self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        qc = _section(evidence.measurements, QC)
        in_process = tuple(rule.get("in_process") or ())
        weight = _positive(evidence.design, DESIGN_WEIGHT, DESIGN_WEIGHT)
        runners = {
            "viable_cell_dose": lambda: self._dose(qc, evidence, in_process, weight),
            "viability": lambda: self._viability(qc, evidence, in_process),
            "identity_purity": lambda: self._markers(qc, evidence.specs),
            "endotoxin": lambda: self._endotoxin(qc, evidence, weight),
            "mycoplasma": lambda: self._mycoplasma(qc),
            "sterility": lambda: self._sterility(qc),
        }
        return ReleaseResults(checks=tuple(runners[name]() for name in TESTS if name in tests))

    # --- one method per test ---

    @staticmethod
    def _source(
        name: str,
        key: str,
        qc: Mapping[str, Any],
        evidence: ReleaseEvidence,
        allowed: Sequence[str],
    ) -> tuple[Mapping[str, Any], str, str]:
        """The laboratory's result for `key`, or the micro-factory's in-process one (the
        measurement document's top level) when the rule allows it for `name` and the
        laboratory has not reported."""
        if name in allowed and qc.get(key) is None:
            return evidence.measurements, "measurements", " (in-process data)"
        return qc, f"measurements.{QC}", ""

    def _dose(
        self,
        qc: Mapping[str, Any],
        evidence: ReleaseEvidence,
        allowed: Sequence[str],
        weight: float,
    ) -> Check:
        doc, where, source = self._source("viable_cell_dose", "viable_cells", qc, evidence, allowed)
        total = _number(doc, "viable_cells", f"{where}.viable_cells")
        if total is None:
            return Check("viable_cell_dose", None, "viable cell dose: no viable cell count")
        prescribed = _positive(evidence.design, DESIGN_DOSE, DESIGN_DOSE)
        spec = _spec(evidence.specs, "dose")
        low_pct = _number(spec, "min_pct", "cqa_specs.dose.min_pct")
        high_pct = _number(spec, "max_pct", "cqa_specs.dose.max_pct")
        low_pct = DEFAULT_DOSE_BAND_PCT[0] if low_pct is None else low_pct
        high_pct = DEFAULT_DOSE_BAND_PCT[1] if high_pct is None else high_pct
        per_kg = total / weight
        pct = per_kg / prescribed * 100
        ok = low_pct - _EPS <= pct <= high_pct + _EPS
        reasons = [
            f"viable cell dose{source}: {_sci(total)} viable cells ÷ {weight:g} kg ="
            f" {_sci(per_kg)} cells/kg, {pct:.1f} % of the prescribed {_sci(prescribed)}"
            f" cells/kg (allowed {low_pct:g}-{high_pct:g} %)"
        ]
        low_abs = _number(spec, "min_per_kg", "cqa_specs.dose.min_per_kg")
        high_abs = _number(spec, "max_per_kg", "cqa_specs.dose.max_per_kg")
        if low_abs is not None and per_kg < low_abs * (1 - _EPS):
            ok = False
            reasons.append(f"below the master file's minimum {_sci(low_abs)} cells/kg")
        if high_abs is not None and per_kg > high_abs * (1 + _EPS):
            ok = False
            reasons.append(f"above the master file's maximum {_sci(high_abs)} cells/kg")
        return Check("viable_cell_dose", ok, "; ".join(reasons))

    def _viability(
        self, qc: Mapping[str, Any], evidence: ReleaseEvidence, allowed: Sequence[str]
    ) -> Check:
        doc, where, source = self._source("viability", "viability", qc, evidence, allowed)
        viability = _fraction(doc, "viability", f"{where}.viability")
        if viability is None:
            return Check("viability", None, "viability: no result")
        minimum = _fraction(_spec(evidence.specs, "viability"), "min", "cqa_specs.viability.min")
        if minimum is None:
            minimum = _fraction(evidence.design, "viability_min", "viability_min")
        minimum = DEFAULT_MIN_VIABILITY if minimum is None else minimum
        ok = viability >= minimum - _EPS
        sign = "≥" if ok else "<"
        return Check(
            "viability",
            ok,
            f"viability{source}: {viability:.1%} {sign} {minimum:.1%} minimum",
        )

    @staticmethod
    def _markers(qc: Mapping[str, Any], specs: Mapping[str, Any]) -> Check:
        spec = specs.get("markers")
        if spec is None:
            limits = dict(DEFAULT_MARKERS)
        elif isinstance(spec, Mapping) and spec:
            limits = {}
            for marker, limit in spec.items():
                field = f"cqa_specs.markers.{marker}"
                value = _fraction(limit if isinstance(limit, Mapping) else {}, "min", field)
                if value is None:
                    raise ValidationFailed(
                        f"{field} must give min, the marker's minimum fraction of viable cells",
                        field=field,
                    )
                limits[str(marker)] = value
        else:
            raise ValidationFailed(
                "cqa_specs.markers must map each marker to {min}", field="cqa_specs.markers"
            )
        found = qc.get("markers") or {}
        if not isinstance(found, Mapping):
            raise ValidationFailed(
                "measurements.qc.markers must map each marker to its fraction of viable cells",
                field="measurements.qc.markers",
            )
        missing = [m for m in limits if found.get(m) is None]
        if missing:
            return Check(
                "identity_purity", None, f"identity and purity: no result for {', '.join(missing)}"
            )
        parts, ok = [], True
        for marker, minimum in limits.items():
            value = _fraction(found, marker, f"measurements.qc.markers.{marker}")
            assert value is not None
            passed = value >= minimum - _EPS
            ok = ok and passed
            parts.append(f"{marker} {value:.1%} {'≥' if passed else '<'} {minimum:.1%}")
        return Check("identity_purity", ok, "identity and purity: " + ", ".join(parts))

    @staticmethod
    def _endotoxin(qc: Mapping[str, Any], evidence: ReleaseEvidence, weight: float) -> Check:
        per_ml = _number(qc, "endotoxin_eu_per_ml", "measurements.qc.endotoxin_eu_per_ml")
        if per_ml is None:
            return Check("endotoxin", None, "endotoxin: no result")
        volume = _positive(evidence.design, DESIGN_VOLUME, DESIGN_VOLUME)
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
    def _mycoplasma(qc: Mapping[str, Any]) -> Check:
        result = _outcome(qc, "mycoplasma", "measurements.qc.mycoplasma")
        if result in (None, _PENDING):
            # not a test that may be pending: without its result the QP decides
            return Check("mycoplasma", None, "mycoplasma: no result")
        return Check("mycoplasma", result == _NEGATIVE, f"mycoplasma: {result}")

    @staticmethod
    def _sterility(qc: Mapping[str, Any]) -> Check:
        result = _outcome(qc, "sterility", "measurements.qc.sterility")
        if result in (None, _PENDING):
            # may be pending at release (PENDING_AT_RELEASE): quality follows it up
            return Check("sterility", None, "sterility: result pending (culture still reading)")
        return Check("sterility", result == _NEGATIVE, f"sterility: {result}")

    # --- the QC laboratory's results (quality.kit.LabResultsKit) ---

    lab_result_keys: Mapping[str, str] = LAB_RESULT_KEYS

    def check_lab_results(self, results: Mapping[str, Any]) -> dict[str, Any]:
        """The keys of the "qc" object, each checked as `evaluate` reads it (a laboratory
        reports a result: mycoplasma and sterility are negative or positive, never pending)."""
        out: dict[str, Any] = {}
        for key, value in results.items():
            field = f"lab_results.{key}"
            if key not in LAB_RESULT_KEYS:
                raise ValidationFailed(
                    f"{field} is not a result of this product's laboratory;"
                    f" known: {', '.join(LAB_RESULT_KEYS)}",
                    field=field,
                )
            one = {key: value}
            if value is None:
                raise ValidationFailed(f"{field} has no value", field=field)
            if key == "viable_cells":
                out[key] = _number(one, key, field)
            elif key == "viability":
                out[key] = _fraction(one, key, field)
            elif key == "endotoxin_eu_per_ml":
                out[key] = _number(one, key, field)
            elif key == "markers":
                out[key] = self._lab_markers(value, field)
            elif value not in (_NEGATIVE, _POSITIVE):
                raise ValidationFailed(
                    f"{field} is {value!r}; a laboratory result is negative or positive",
                    field=field,
                )
            else:
                out[key] = value
        return out

    @staticmethod
    def _lab_markers(value: Any, field: str) -> dict[str, float]:
        if not isinstance(value, Mapping) or not value:
            raise ValidationFailed(
                f'{field} must map each marker to its fraction of viable cells, e.g. {{"CD3+":'
                " 0.92}",
                field=field,
            )
        if len(value) > MAX_MARKERS:
            raise ValidationFailed(
                f"{field} names {len(value)} markers; a panel has at most {MAX_MARKERS}",
                field=field,
            )
        markers: dict[str, float] = {}
        for marker, fraction in value.items():
            if not isinstance(marker, str) or not _MARKER.fullmatch(marker):
                raise ValidationFailed(
                    f"{field} names a marker {marker!r}; a marker is 1-32 letters, digits,"
                    " + / . _ - or space",
                    field=field,
                )
            checked = _fraction({marker: fraction}, marker, f"{field}.{marker}")
            if checked is None:
                raise ValidationFailed(f"{field}.{marker} has no value", field=f"{field}.{marker}")
            markers[marker] = checked
        return markers

    def with_lab_results(
        self, measurements: Mapping[str, Any], results: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The laboratory's results in force go into the measurement document's "qc" object
        (over what the document held; a marker panel replaces the one before as a whole)."""
        qc = dict(_section(measurements, QC))
        qc.update(results)
        return {**measurements, QC: qc}

    # --- material lots ---

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """{"kind", "grade", "sterility_certificate", optional "endotoxin_eu_per_ml"}."""
        if not isinstance(attributes, Mapping):
            raise ValidationFailed(
                'attributes must be an object, e.g. {"kind": "medium", "grade": "gmp",'
                ' "sterility_certificate": "CoA-1234"}',
                field="attributes",
            )
        unknown = [str(key) for key in attributes if key not in LOT_ATTRIBUTES]
        if unknown:
            raise ValidationFailed(
                f"attributes.{unknown[0]} is not an attribute of this material;"
                f" known: {', '.join(LOT_ATTRIBUTES)}",
                field=f"attributes.{unknown[0]}",
            )
        kind = attributes.get("kind")
        if kind not in LOT_KINDS:
            raise ValidationFailed(
                f"attributes.kind is {kind!r}; expected one of {', '.join(LOT_KINDS)}",
                field="attributes.kind",
            )
        grade = attributes.get("grade")
        if grade not in LOT_GRADES:
            raise ValidationFailed(
                f"attributes.grade is {grade!r}; a cell product is made only from materials of"
                f" grade {' or '.join(LOT_GRADES)}",
                field="attributes.grade",
            )
        certificate = attributes.get("sterility_certificate")
        if not isinstance(certificate, str) or not _CERTIFICATE.fullmatch(certificate):
            raise ValidationFailed(
                "attributes.sterility_certificate must name the supplier's sterility"
                f" certificate (1-64 letters, digits, space . / _ -), got {certificate!r}",
                field="attributes.sterility_certificate",
            )
        out: dict[str, Any] = {"kind": kind, "grade": grade, "sterility_certificate": certificate}
        endotoxin = _number(attributes, "endotoxin_eu_per_ml", "attributes.endotoxin_eu_per_ml")
        if endotoxin is not None:
            out["endotoxin_eu_per_ml"] = endotoxin
        return out
