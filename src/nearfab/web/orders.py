"""Orders in the browser: the list (search, status filter, pages) and the prescription form.

The list shows the orders of the sites the person sees (`visible_sites` under order.read: their
own site; the control site and the auditor see every site), searched by order id, patient
reference (PT-…), batch number or pack serial. The prescription form, the FHIR file upload and
the pasted FHIR JSON all go through the API's intake (`OrderService.submit`): the form builds a
FHIR Bundle (Patient, MedicationRequest, and the body-weight Observation when the product's
family asks for it: orders/form.py), so an order and a refusal are the ones the API gives; a
refusal naming a FHIR path is shown at the form field it came from (docs/web.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, or_, select

from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.custody.models import SerialUnit
from nearfab.identity import Actor, Permission, can, is_network_wide, visible_sites
from nearfab.masterfiles import MasterFile
from nearfab.network import Site, SiteKind
from nearfab.orders import Order, OrderStatus, Patient
from nearfab.orders.form import ExtraField, PrescriptionForm, form_of
from nearfab.orders.identifiers import NHS_NUMBER_SYSTEM, is_valid_nhs_number
from nearfab.orders.kit import MedicationCode
from nearfab.production.models import BatchRecord
from nearfab.uow import UnitOfWork
from nearfab.web.pages import _app, _check_csrf, page, render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
BODY_WEIGHT = "29463-7"  # LOINC body weight (FHIR vital signs profile)
PRESCRIPTION_SYSTEM = "https://nearfab.org/fhir/sid/prescription"

# a FHIR path of a refusal about the form's own Bundle -> the form field it is shown at (first
# match wins); the Bundle the form builds holds the Patient at entry[0], the MedicationRequest
# at entry[1] and the body-weight Observation at entry[2] (`prescription_bundle`)
_FIELD_OF_PATH: tuple[tuple[str, str], ...] = (
    ("doseQuantity.unit", "dose_unit"),
    ("doseQuantity.code", "dose_unit"),
    ("doseQuantity.system", "dose_unit"),
    ("doseQuantity", "dose_value"),
    ("medication", "medicine"),
    ("expectedSupplyDuration", "duration_days"),
    ("dispenseRequest", "duration_days"),
    ("timing", "frequency"),
    ("birthDate", "birth_date"),
    ("entry[0]", "nhs_number"),
    ("subject", "nhs_number"),
    ("entry[2]", "body_weight"),
    ("Observation", "body_weight"),
    ("requester", "prescriber"),
    ("entry[1].resource.identifier", "prescription_id"),
    ("resubmit_of", "prescription_id"),
)


def form_field(
    fhir_field: str | None, mode: str = "form", extra: Collection[str] = ()
) -> str | None:
    """The page's field a refusal's FHIR path (or plain field) belongs to, None when none.
    An uploaded or pasted document is one field: the file or the text. `extra`: the names of
    the families' own fields on the page (orders.form.ExtraField)."""
    if not fhir_field:
        return None
    if fhir_field in FORM_FIELDS or fhir_field == "fhir_file" or fhir_field in extra:
        return fhir_field
    if fhir_field in ("site_id", "site"):  # the ordering site (refused for site staff)
        return "site"
    if mode == "upload":
        return "fhir_file"
    if mode == "paste":
        return "fhir_json"
    for fragment, name in _FIELD_OF_PATH:
        if fragment in fhir_field:
            return name
    return None


# --- the list -----------------------------------------------------------------------------------


def search_orders(
    uow: UnitOfWork,
    actor: Actor,
    *,
    q: str | None = None,
    status: str | None = None,
    page_no: int = 1,
    size: int = PAGE_SIZE,
) -> tuple[list[Order], int]:
    """One page of the orders the actor may read, newest first, and how many match in all.
    `q`: an order id, a patient reference, a batch number or a pack serial (exact)."""
    sites = visible_sites(actor, Permission.ORDER_READ)
    where: list[Any] = []
    if sites is not None:
        where.append(Order.site_id.in_(sites))
    if status:
        where.append(Order.status == status)
    text = (q or "").strip()
    if text:
        where.append(
            or_(
                Order.id == text,
                Order.patient_id.in_(select(Patient.id).where(Patient.ref == text.upper())),
                Order.id.in_(select(BatchRecord.order_id).where(BatchRecord.batch_number == text)),
                Order.id.in_(select(SerialUnit.order_id).where(SerialUnit.serial == text)),
            )
        )
    total = uow.session.scalar(select(func.count()).select_from(Order).where(*where)) or 0
    stmt = (
        select(Order)
        .where(*where)
        .order_by(Order.created_at.desc(), Order.id)
        .offset((page_no - 1) * size)
        .limit(size)
    )
    return list(uow.session.scalars(stmt)), int(total)


@router.get("/orders", response_class=HTMLResponse)
def orders_list(
    request: Request,
    actor: Annotated[Actor, page(Permission.ORDER_READ)],
    status: str | None = None,
    q: str | None = None,
) -> Response:
    application = _app(request)
    statuses = [s.value for s in OrderStatus]
    status = status if status in statuses else None
    number = request.query_params.get("page", "1")
    page_no = int(number) if number.isdigit() and 0 < int(number) < 1_000_000 else 1
    q = (q or "").strip()[:128] or None
    with application.uow() as uow:
        orders, total = search_orders(uow, actor, q=q, status=status, page_no=page_no)
        sites = {s.id: s.code for s in uow.session.scalars(select(Site))}
        refs = _patient_refs(uow, [o.patient_id for o in orders])
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return render(
        request,
        "orders/list.html",
        actor,
        orders=orders,
        total=total,
        status=status,
        statuses=statuses,
        q=q,
        page_no=page_no,
        pages=pages,
        sites=sites,
        refs=refs,
        scope="every site" if visible_sites(actor, Permission.ORDER_READ) is None else "",
        may_prescribe=can(actor, Permission.ORDER_SUBMIT),
        flash=request.session.pop("orders_flash", None),
    )


def _patient_refs(uow: UnitOfWork, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = uow.session.execute(select(Patient.id, Patient.ref).where(Patient.id.in_(ids)))
    return {pid: ref for pid, ref in rows}


# --- the prescription form ----------------------------------------------------------------------


def medicines(application: Any, uow: UnitOfWork, actor: Actor) -> list[dict[str, Any]]:
    """The medicines a person may prescribe here: each effective master file whose approval
    holds, allowed at the person's site (every point-of-care site for network staff), with
    the coding the form sends and what its product family's form asks for."""
    out = []
    for mf in application.master_files.effective(uow):
        allowed = set(mf.allowed_site_ids or [])
        local = actor.site_id and not is_network_wide(actor, Permission.ORDER_SUBMIT)
        if local and allowed and actor.site_id not in allowed:
            continue
        family = application.families.get(mf.product_family)
        coding = _ingredient_coding(mf, family.prescription)
        if coding is None:
            continue
        out.append(
            {
                "code": mf.code,
                "title": mf.title,
                "version": mf.version,
                "coding": coding,
                "form": form_of(family),
                "envelope": mf.design_envelope or {},
            }
        )
    return sorted(out, key=lambda m: m["title"])


def _ingredient_coding(mf: MasterFile, kit: Any) -> dict[str, str] | None:
    """The first accepted coding that names no product (a product code fixes a strength)."""
    for code in mf.accepted_codes or []:
        coding = MedicationCode(code.get("system", ""), code.get("code", ""), code.get("display"))
        if not kit.product_codes([coding]):
            return {k: v for k, v in code.items() if k in ("system", "code", "display") and v}
    return None


def _number(text: str, name: str, what: str) -> float:
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        raise ValidationFailed(f"{what}: {text!r} is not a number", field=name) from None
    if not math.isfinite(value) or value <= 0:
        raise ValidationFailed(f"{what}: a positive number is required", field=name)
    return value


def prescription_bundle(
    fields: dict[str, str], medicine: dict[str, Any], *, today: str
) -> dict[str, Any]:
    """The FHIR R4 Bundle the form's fields say: a Patient, a MedicationRequest and, when the
    family's form asks for it, a body-weight Observation. Empty or malformed numbers are
    refused here naming the form field; everything else is judged by the intake."""
    form: PrescriptionForm = medicine["form"]
    nhs = re.sub(r"\s", "", fields.get("nhs_number", ""))
    name = fields.get("patient_name", "").strip()
    birth = fields.get("birth_date", "").strip()
    prescriber = fields.get("prescriber", "").strip()
    if not nhs:
        raise ValidationFailed("patient: the patient's NHS number is required", field="nhs_number")
    if not is_valid_nhs_number(nhs):
        raise ValidationFailed(
            f"patient: {nhs!r} is not an NHS number (10 digits, the last a modulus 11 check)",
            field="nhs_number",
        )
    if not prescriber:
        raise ValidationFailed("prescriber: name the prescriber", field="prescriber")
    dose = _number(fields.get("dose_value", ""), "dose_value", "dose")
    unit = fields.get("dose_unit", "").strip()
    if not unit:
        raise ValidationFailed("dose unit: choose the dose unit", field="dose_unit")
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "patient",
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": nhs}],
    }
    if name:
        family, _, given = name.rpartition(" ")
        patient["name"] = [{"family": family or given, **({"given": [given]} if family else {})}]
    if birth:
        patient["birthDate"] = birth
    instruction: dict[str, Any] = {
        "text": f"{dose:g} {unit}",
        "doseAndRate": [
            {"doseQuantity": {"value": dose, "unit": unit, "system": UCUM, "code": unit}}
        ],
    }
    request: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": "rx",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [medicine["coding"]], "text": medicine["title"]},
        "subject": {"reference": "Patient/patient"},
        "requester": {"display": prescriber},
        "authoredOn": today,
        "dosageInstruction": [instruction],
    }
    if form.course:
        per_day = _number(fields.get("frequency", ""), "frequency", "doses a day")
        days = _number(fields.get("duration_days", ""), "duration_days", "duration (days)")
        if not per_day.is_integer():
            raise ValidationFailed("doses a day: a whole number is required", field="frequency")
        instruction["timing"] = {
            "repeat": {"frequency": int(per_day), "period": 1, "periodUnit": "d"}
        }
        instruction["text"] += f", {int(per_day)} a day for {days:g} days"
        request["dispenseRequest"] = {
            "expectedSupplyDuration": {"value": days, "unit": "days", "system": UCUM, "code": "d"}
        }
    identifiers: list[dict[str, str]] = []
    ident = fields.get("prescription_id", "").strip()
    if ident:
        identifiers.append({"system": PRESCRIPTION_SYSTEM, "value": ident})
    # the family's own values, as identifiers in its systems (as the API's FHIR sends them)
    for extra in form.extra:
        identifiers.append(
            {"system": extra.system, "value": extra_value(extra, fields, medicine["envelope"])}
        )
    if identifiers:
        request["identifier"] = identifiers
    entries: list[dict[str, Any]] = [
        {"fullUrl": "urn:uuid:patient", "resource": patient},
        {"fullUrl": "urn:uuid:rx", "resource": request},
    ]
    if form.body_weight:
        weight = _number(fields.get("body_weight", ""), "body_weight", "body weight (kg)")
        entries.append(
            {
                "fullUrl": "urn:uuid:weight",
                "resource": {
                    "resourceType": "Observation",
                    "id": "weight",
                    "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": BODY_WEIGHT}]},
                    "subject": {"reference": "Patient/patient"},
                    "valueQuantity": {"value": weight, "unit": "kg", "system": UCUM, "code": "kg"},
                },
            }
        )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def extra_value(extra: ExtraField, fields: Mapping[str, str], envelope: Mapping[str, Any]) -> str:
    """What was typed (or chosen) for a family's field, checked by the family against the
    master file's envelope; a refusal names the form field."""
    value = fields.get(extra.name, "").strip()
    if not value:
        raise ValidationFailed(f"{extra.label}: required", field=extra.name)
    options = extra.options(envelope)
    if options and value not in options:
        raise ValidationFailed(
            f"{extra.label}: {value!r} is not one of {', '.join(options)}", field=extra.name
        )
    if extra.check is not None:
        try:
            value = extra.check(value, envelope)
        except DomainError as exc:
            raise ValidationFailed(f"{extra.label}: {exc.message}", field=extra.name) from exc
    return value


def extra_fields(meds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The families' own fields of the medicines offered, once each by name: the field, the
    medicines asking for it and the choices each one's envelope offers."""
    out: dict[str, dict[str, Any]] = {}
    for m in meds:
        form: PrescriptionForm = m["form"]
        for extra in form.extra:
            row = out.setdefault(extra.name, {"field": extra, "medicines": [], "options": []})
            row["medicines"].append(m["code"])
            row["options"].extend((m["code"], o) for o in extra.options(m["envelope"]))
    return list(out.values())


def _extra_names(application: Any) -> list[str]:
    """Every family's own form fields (their values are kept when the form is shown again)."""
    return sorted({x.name for family in application.families for x in form_of(family).extra})


def _sites_to_order_for(uow: UnitOfWork, actor: Actor) -> list[Site]:
    """The point-of-care sites network staff may name (site staff order for their own)."""
    if not is_network_wide(actor, Permission.ORDER_SUBMIT):
        return []
    rows = uow.session.scalars(select(Site).where(Site.kind != SiteKind.CONTROL.value))
    return sorted(rows, key=lambda s: s.code)


def _form_page(
    request: Request,
    actor: Actor,
    *,
    fields: dict[str, str] | None = None,
    error: DomainError | None = None,
    mode: str = "form",
) -> HTMLResponse:
    application = _app(request)
    with application.uow() as uow:
        meds = medicines(application, uow, actor)
        sites = _sites_to_order_for(uow, actor)
    extras = extra_fields(meds)
    names = [x["field"].name for x in extras]
    shown = form_field(error.field, mode, names) if error is not None else None
    return render(
        request,
        "orders/new.html",
        actor,
        medicines=meds,
        extras=extras,
        sites=sites,
        fields=fields or {},
        error=error,
        error_field=shown,
        mode=mode,
        status_code=error.http_status if error is not None else 200,
    )


@router.get("/orders/new", response_class=HTMLResponse)
def prescription_form(
    request: Request, actor: Annotated[Actor, page(Permission.ORDER_SUBMIT)]
) -> Response:
    return _form_page(request, actor)


FORM_FIELDS = (
    "medicine",
    "nhs_number",
    "patient_name",
    "birth_date",
    "dose_value",
    "dose_unit",
    "frequency",
    "duration_days",
    "body_weight",
    "prescriber",
    "prescription_id",
    "site",
    "fhir_json",
)


@router.post("/orders/new", response_class=HTMLResponse)
async def prescription_submit(
    request: Request,
    actor: Annotated[Actor, page(Permission.ORDER_SUBMIT)],
    csrf_token: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "form",
    fhir_file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """One submission: the form's fields (`mode=form`), an uploaded FHIR file
    (`mode=upload`) or pasted FHIR JSON (`mode=paste`); the same intake as the API."""
    application = _app(request)
    data = await request.form()
    fields = {k: str(data.get(k, "") or "") for k in (*FORM_FIELDS, *_extra_names(application))}
    mode = mode if mode in ("form", "upload", "paste") else "form"
    # the API's limit for a prescription (POST /api/v1/orders; the page's body may be larger)
    limit = application.settings.prescription_max_body_bytes
    try:
        _check_csrf(request, csrf_token)
        document: Any
        if mode == "upload":
            if fhir_file is None or not fhir_file.filename:
                raise ValidationFailed("file: choose a FHIR JSON file", field="fhir_file")
            raw = await fhir_file.read(limit + 1)
            if len(raw) > limit:
                raise ValidationFailed(
                    f"file: a prescription may hold at most {limit} bytes; this one is larger",
                    field="fhir_file",
                )
            document = raw
        elif mode == "paste":
            if not fields["fhir_json"].strip():
                raise ValidationFailed(
                    "FHIR JSON: paste a Bundle or MedicationRequest", field="fhir_json"
                )
            if len(fields["fhir_json"].encode()) > limit:
                raise ValidationFailed(
                    f"FHIR JSON: a prescription may hold at most {limit} bytes; this is larger",
                    field="fhir_json",
                )
            document = fields["fhir_json"]
        else:
            with application.uow() as uow:
                meds = {m["code"]: m for m in medicines(application, uow, actor)}
            chosen = meds.get(fields["medicine"])
            if chosen is None:
                raise ValidationFailed(
                    "medicine: choose one of the medicines offered", field="medicine"
                )
            today = application.clock.now().date().isoformat()
            document = prescription_bundle(fields, chosen, today=today)
        with application.uow() as uow:
            orders = application.orders.submit(
                uow, actor, document, site_id=fields["site"].strip() or None
            )
            made = [(o.id, o.status, o.stop_reason) for o in orders]
    except DomainError as exc:
        return _form_page(request, actor, fields=fields, error=exc, mode=mode)
    words = "; ".join(
        f"{oid} ({status.replace('_', ' ')}{': ' + why if why else ''})"
        for oid, status, why in made
    )
    request.session["orders_flash"] = f"Prescription received: order {words}."
    if len(made) == 1:
        request.session["order_flash"] = f"Prescription received: order {words}."
        return RedirectResponse(f"/orders/{made[0][0]}", status_code=303)
    return RedirectResponse("/orders", status_code=303)
