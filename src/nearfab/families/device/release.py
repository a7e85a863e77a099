"""device's `release` part: implements nearfab.quality.kit.ReleaseKit.

A build is released on what its device history record holds (ISO 13485 §4.2.5 / 7.5.1; the
core's batch record): the test coupon printed with it, gauged at its critical dimensions against
the design's tolerances; each device's leak check and flow check on the site's rig; the visual
inspection is a critical master-file step the operator signs and a second person verifies
(the record is complete before release). The signatory is the manufacturer's responsible
person (`release_signatory` = the `responsible_person` role, docs/device.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.families.device.machines import COUPON_KEYS, FLOW_ERROR, LEAK, check_document
from nearfab.quality.kit import Check, ReleaseEvidence, ReleaseResults

TESTS: dict[str, str] = {
    "coupon_metrology": "Test coupon: critical dimensions",
    "leak_check": "Leak check of every device",
    "flow_check": "Flow check of every device",
}
DEFAULT_MAX_LEAK_ML_MIN = 0.0  # a flowmeter that drips from its wall reads low: none allowed
LOT_ATTRIBUTES = ("polymer", "filament_diameter_mm", "biocompatibility")
POLYMERS = ("PETG", "PLA")
_EPS = 1e-9


def _spec_number(specs: Mapping[str, Any], test: str, key: str, default: float) -> float:
    spec = specs.get(test) or {}
    value = spec.get(key, default) if isinstance(spec, Mapping) else default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationFailed(
            f"cqa_specs.{test}.{key} must be a number", field=f"cqa_specs.{test}.{key}"
        )
    return float(value)


def coupon_check(coupon: Mapping[str, Any] | None, design: Mapping[str, Any]) -> Check:
    """Each critical dimension within nominal ± tolerance (the design's)."""
    if not coupon:
        return Check("coupon_metrology", None, "coupon: no measurements recorded")
    dims = design.get("critical_dimensions")
    if not isinstance(dims, Mapping):
        raise ValidationFailed("the design has no critical dimensions", field="critical_dimensions")
    parts, failed, missing = [], [], []
    for key in COUPON_KEYS:
        spec = dims.get(key) or {}
        nominal, tol = float(spec["nominal"]), float(spec["tolerance"])
        if key not in coupon:
            missing.append(key)
            continue
        value = float(coupon[key])
        ok = abs(value - nominal) <= tol + _EPS
        parts.append(f"{key} {value:.3f} ({nominal:.3f} ± {tol:.3f}) {'ok' if ok else 'OUT'}")
        if not ok:
            failed.append(key)
    if failed:
        return Check("coupon_metrology", False, "coupon: " + "; ".join(parts))
    if missing:
        return Check("coupon_metrology", None, f"coupon: not measured: {', '.join(missing)}")
    return Check("coupon_metrology", True, "coupon: " + "; ".join(parts))


def leak_check(devices: Sequence[Mapping[str, Any]], max_leak: float) -> Check:
    if not devices or any(LEAK not in d for d in devices):
        untested = sum(1 for d in devices if LEAK not in d)
        return Check("leak_check", None, f"leak check: {untested or 'no'} device(s) not tested")
    leaking = [i for i, d in enumerate(devices) if float(d[LEAK]) > max_leak + _EPS]
    return Check(
        "leak_check",
        not leaking,
        f"{len(leaking)} of {len(devices)} devices leak more than {max_leak:g} mL/min"
        + (f" (devices {', '.join(str(i + 1) for i in leaking)})" if leaking else ""),
    )


def flow_check(devices: Sequence[Mapping[str, Any]], max_error: float) -> Check:
    if not devices or any(FLOW_ERROR not in d for d in devices):
        untested = sum(1 for d in devices if FLOW_ERROR not in d)
        return Check("flow_check", None, f"flow check: {untested or 'no'} device(s) not tested")
    errors = [float(d[FLOW_ERROR]) for d in devices]
    outside = [e for e in errors if abs(e) > max_error + _EPS]
    worst = max(errors, key=abs)
    return Check(
        "flow_check",
        not outside,
        f"{len(outside)} of {len(devices)} devices read outside ±{max_error:g} % "
        f"(worst {worst:+.2f} %)",
    )


class DeviceRelease:
    """Release tests of a flowmeter build; the filament lot's attributes."""

    tests: Mapping[str, str] = TESTS
    # who signs the release (quality.kit.release_signatory): not a QP for a medical device
    release_signatory = "responsible_person"
    # a build that failed a test is nonconforming (ISO 13485 §8.3): released only by concession,
    # the exceptional route (the treating clinician's signed request and the signatory's)
    exceptional_release_only = True

    def check_rule(self, rule: Mapping[str, Any]) -> None:
        return None

    def evaluate(
        self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        document = evidence.measurements
        devices = document.get("devices") or []
        checks: list[Check] = []
        if "coupon_metrology" in tests:
            checks.append(coupon_check(document.get("coupon"), evidence.design))
        if "leak_check" in tests:
            limit = _spec_number(
                evidence.specs, "leak_check", "max_ml_min", DEFAULT_MAX_LEAK_ML_MIN
            )
            checks.append(leak_check(devices, limit))
        if "flow_check" in tests:
            accuracy = float(evidence.design.get("flow_accuracy_pct", 5.0))
            limit = _spec_number(evidence.specs, "flow_check", "max_error_pct", accuracy)
            checks.append(flow_check(devices, limit))
        return ReleaseResults(checks=tuple(checks))

    # --- quality.kit.LabResultsKit: the site's gauge and leak/flow rig, or the control site's
    # metrology, report what a real printer cannot (or measure again what the twin reported)

    @property
    def lab_result_keys(self) -> Mapping[str, str]:
        return {
            "coupon": "the test coupon gauged, mm: {orifice_diameter_mm, inner_diameter_mm,"
            " wall_mm}",
            "devices": "each device in build order: [{leak_ml_min, flow_error_pct}] (leak at"
            " the full-scale head in mL/min; reading error at the reference flow in %)",
        }

    def check_lab_results(self, results: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(results, Mapping) or not results:
            raise ValidationFailed("give coupon and/or devices", field="lab_results")
        for key in results:
            if key not in ("coupon", "devices"):
                raise ValidationFailed(
                    f"lab_results.{key}: the device family takes coupon and devices",
                    field=f"lab_results.{key}",
                )
        clean: dict[str, Any] = {}
        if "coupon" in results:
            coupon = results["coupon"]
            if not isinstance(coupon, Mapping) or set(coupon) != set(COUPON_KEYS):
                raise ValidationFailed(
                    f"lab_results.coupon must give {', '.join(COUPON_KEYS)}",
                    field="lab_results.coupon",
                )
            try:
                clean["coupon"] = check_document({"devices": [], "coupon": coupon})["coupon"]
            except ValidationFailed as exc:
                raise ValidationFailed(
                    exc.message.replace("measurements.", "lab_results."),
                    field=str(exc.field).replace("measurements.", "lab_results."),
                ) from None
        if "devices" in results:
            devices = results["devices"]
            if not isinstance(devices, list) or not devices or any(not d for d in devices):
                raise ValidationFailed(
                    "lab_results.devices: one {leak_ml_min, flow_error_pct} per device",
                    field="lab_results.devices",
                )
            try:
                clean["devices"] = check_document({"devices": devices})["devices"]
            except ValidationFailed as exc:
                raise ValidationFailed(
                    exc.message.replace("measurements.", "lab_results."),
                    field=str(exc.field).replace("measurements.", "lab_results."),
                ) from None
        return clean

    def with_lab_results(
        self, measurements: Mapping[str, Any], results: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The laboratory's coupon and device results replace the printer's."""
        merged = dict(measurements)
        if "coupon" in results:
            merged["coupon"] = dict(results["coupon"])
        if "devices" in results:
            made = len(measurements.get("devices") or [])
            if made and len(results["devices"]) != made:
                raise ValidationFailed(
                    f"lab_results.devices gives {len(results['devices'])} results for {made}"
                    " devices made",
                    field="lab_results.devices",
                )
            merged["devices"] = [dict(d) for d in results["devices"]]
        return merged

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """{"polymer": "PETG" | "PLA", "filament_diameter_mm": 1.75 or 2.85 (±0.05),
        "biocompatibility": the supplier's ISO 10993 certificate reference}."""
        if not isinstance(attributes, Mapping):
            raise ValidationFailed("attributes must be an object", field="attributes")
        for key in attributes:
            if key not in LOT_ATTRIBUTES:
                raise ValidationFailed(
                    f"attributes.{key} is not an attribute of a filament lot; known: "
                    f"{', '.join(LOT_ATTRIBUTES)}",
                    field=f"attributes.{key}",
                )
        polymer = attributes.get("polymer")
        if polymer not in POLYMERS:
            raise ValidationFailed(
                f"attributes.polymer must be one of {', '.join(POLYMERS)}",
                field="attributes.polymer",
            )
        diameter = attributes.get("filament_diameter_mm")
        if (
            isinstance(diameter, bool)
            or not isinstance(diameter, int | float)
            or min(abs(diameter - 1.75), abs(diameter - 2.85)) > 0.05
        ):
            raise ValidationFailed(
                "attributes.filament_diameter_mm must be 1.75 or 2.85 mm (±0.05)",
                field="attributes.filament_diameter_mm",
            )
        certificate = attributes.get("biocompatibility")
        if not isinstance(certificate, str) or not certificate.strip():
            raise ValidationFailed(
                "attributes.biocompatibility: the supplier's ISO 10993 certificate reference",
                field="attributes.biocompatibility",
            )
        return {
            "polymer": polymer,
            "filament_diameter_mm": float(diameter),
            "biocompatibility": certificate.strip(),
        }
