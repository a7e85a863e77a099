"""The dose adjusted from the patient's observations, on the web (docs/dose-adjustment.md): the
order page's summary (`order_doses`, a template function) and `/orders/{order_id}/doses` with
the observations, the proposals and their working, and the forms: record a weight and height
(made into FHIR Observations, the same use case as `POST /api/v1/orders/{id}/observations`),
accept or reject a proposal with an e-signature (clinicians of the order's site)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.concurrency import run_in_threadpool

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, NotFound, ValidationFailed
from nearfab.identity import Actor, Permission, authorize, can
from nearfab.uow import UnitOfWork
from nearfab.web.chain import form_number, form_time, refusal_words
from nearfab.web.forms import form_text
from nearfab.web.pages import _app, _not_found, checked_step, page, render, templates

router = APIRouter(include_in_schema=False)

FLASH, ERROR = "dose_flash", "dose_error"
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
# what the form asks for: (field, LOINC code, UCUM unit, words)
VITALS = (("weight", "29463-7", "kg", "Body weight"), ("height", "8302-2", "cm", "Body height"))


def _view(application: App, uow: UnitOfWork, actor: Actor, order_id: str) -> dict[str, Any]:
    order = application.orders.get(uow, order_id)
    authorize(actor, Permission.ORDER_READ, site_id=order.site_id)
    adjust = application.dose_adjustment
    rule = application.master_files.get(uow, order.master_file_id).dose_rule
    return {
        "order_id": order.id,
        "dose": f"{order.dose_value:g} {order.dose_unit}",
        "version": order.prescription_version,
        "supersedes": order.supersedes,
        "rule": rule,
        "observations": adjust.observations(uow, actor, order_id),
        "proposals": adjust.proposals(uow, actor, order_id),
        "may_record": can(actor, Permission.ORDER_OBSERVATION_RECORD, site_id=order.site_id),
        "may_decide": can(actor, Permission.DOSE_DECIDE, site_id=order.site_id),
    }


@pass_context
def order_doses(context: Context, order_id: str) -> dict[str, Any] | None:
    """The order page's summary, or None when the order's product adjusts no dose and no
    observation is held."""
    request, actor = context.get("request"), context.get("actor")
    if request is None or actor is None:
        return None
    application = _app(request)
    try:
        with application.uow() as uow:
            view = _view(application, uow, actor, order_id)
    except DomainError:
        return None
    return view if view["rule"] or view["observations"] or view["supersedes"] else None


templates.env.globals["order_doses"] = order_doses


@router.get("/orders/{order_id}/doses", response_class=HTMLResponse)
def doses_page(
    request: Request, order_id: str, actor: Annotated[Actor, page(Permission.ORDER_READ)]
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            view = _view(application, uow, actor, order_id)
    except DomainError as exc:
        return _not_found(request, actor, exc, order_id)
    return render(
        request,
        "orders/doses.html",
        actor,
        doses=view,
        vitals=VITALS,
        flash=request.session.pop(FLASH, None),
        error=request.session.pop(ERROR, None),
    )


async def _post(
    request: Request,
    actor: Actor,
    site_of: Callable[[App, UnitOfWork], tuple[str, str]],
    permission: Permission,
    what: str,
    step: Callable[[App, UnitOfWork, dict[str, str]], str],
) -> Response:
    """The record's site first (another site's: 404), then the CSRF token and the use case;
    back to the order's doses page with what happened or the refusal in words."""
    form = await form_text(request)
    application = _app(request)

    def scope() -> str:
        with application.uow() as uow:
            order_id, site_id = site_of(application, uow)
            authorize(actor, permission, site_id=site_id)
            return order_id

    try:
        order_id = await run_in_threadpool(scope)
    except DomainError as exc:
        return _not_found(request, actor, exc, "the record")
    try:
        request.session[FLASH] = await run_in_threadpool(
            checked_step, request, application, form, step, actor
        )
    except DomainError as exc:
        request.session[ERROR] = refusal_words(what, exc)
    return RedirectResponse(f"/orders/{order_id}/doses", status_code=303)


def _number(name: str, text: str) -> float | None:
    return form_number(name, text) if text.strip() else None


@router.post("/orders/{order_id}/doses/observations")
async def record_vitals(
    request: Request,
    order_id: str,
    actor: Annotated[Actor, page(Permission.ORDER_OBSERVATION_RECORD)],
) -> Response:
    """A weight and a height measured now (or when given), as FHIR Observations."""

    def site_of(app: App, uow: UnitOfWork) -> tuple[str, str]:
        return order_id, app.orders.get(uow, order_id).site_id

    def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> str:
        text = form.get("measured_at", "").strip()
        at = form_time("measured_at", text) if text else uow.clock.now()
        entries = []
        for name, code, unit, words in VITALS:
            value = _number(name, form.get(name, ""))
            if value is None:
                continue
            entries.append(
                {
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"coding": [{"system": LOINC, "code": code, "display": words}]},
                        "effectiveDateTime": at.isoformat(),
                        "valueQuantity": {"value": value, "system": UCUM, "code": unit},
                    }
                }
            )
        if not entries:
            raise ValidationFailed("weight: give a weight, a height or both", field="weight")
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        done = app.dose_adjustment.record_observations(uow, actor, order_id, bundle)
        if done.proposal is not None:
            p = done.proposal
            return (
                f"{len(done.observations)} observation(s) recorded. Proposed: "
                f"{p.proposed_value:g} {p.proposed_unit} (now {p.current_value:g} "
                f"{p.current_unit}); a clinician decides."
            )
        return f"{len(done.observations)} observation(s) recorded. No proposal: {done.note}"

    return await _post(
        request, actor, site_of, Permission.ORDER_OBSERVATION_RECORD, "Observations", step
    )


def _decision(accept: bool) -> Callable[..., Any]:
    async def decide(
        request: Request,
        proposal_id: str,
        actor: Annotated[Actor, page(Permission.DOSE_DECIDE)],
    ) -> Response:
        def site_of(app: App, uow: UnitOfWork) -> tuple[str, str]:
            from nearfab.orders.dose_models import DoseProposal

            row = uow.session.get(DoseProposal, proposal_id)
            if row is None:
                raise NotFound(f"no dose proposal {proposal_id!r}", field="proposal_id")
            return row.order_id, row.site_id

        def step(app: App, uow: UnitOfWork, form: dict[str, str]) -> str:
            if not form.get("password"):
                raise ValidationFailed("password: type your password to sign", field="password")
            data = {
                "username": form.get("username") or None,
                "password": form.get("password", ""),
                "meaning": "dose accepted" if accept else "dose rejected",
                "reason": form.get("reason") or None,
            }
            adjust = app.dose_adjustment
            row = (adjust.accept if accept else adjust.reject)(uow, actor, proposal_id, data)
            if accept:
                return (
                    f"Dose {row.proposed_value:g} {row.proposed_unit} accepted and signed: "
                    f"order {row.new_order_id} is the new version."
                )
            return "Proposal rejected and signed; the order is unchanged."

        what = "Accepting the dose" if accept else "Rejecting the dose"
        return await _post(request, actor, site_of, Permission.DOSE_DECIDE, what, step)

    return decide


router.post("/dose-proposals/{proposal_id}/accept", name="accept_dose")(_decision(True))
router.post("/dose-proposals/{proposal_id}/reject", name="reject_dose")(_decision(False))
