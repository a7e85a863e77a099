"""Server-rendered pages: network, orders, batch records, the QP release queue, dispense."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context

from nearfab.api.deps import client_of, login_throttle
from nearfab.api.records import batch_trail_view, record_controls_view
from nearfab.api.security import throttled
from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, NotFound, Unauthenticated
from nearfab.custody.services.scope import authorize_pack
from nearfab.identity import (
    Actor,
    Permission,
    authorize_declared,
    can,
    is_network_wide,
)
from nearfab.orders import OrderStatus
from nearfab.production.kit import record_title
from nearfab.quality import signatory_title
from nearfab.readmodels import batch_view, network_view, order_view, pending_view
from nearfab.scheduling import JobStatus
from nearfab.uow import UnitOfWork
from nearfab.web.charts import measurement_chart_svg
from nearfab.web.dispense import pack_card, verdict
from nearfab.web.forms import signature

T = TypeVar("T")
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
router = APIRouter(include_in_schema=False)

# --- template filters: readable times and words ---------------------------------------------
_ACRONYMS = {
    "qp": "QP",
    "rtrt": "RTRT",
    "cpp": "CPP",
    "cpps": "CPPs",
    "gs1": "GS1",
    "fhir": "FHIR",
    "mf": "MF",
    "sd": "SD",
}


def human(value: object) -> str:
    """`needs_qp_review` -> `needs QP review`: a code as words for people."""
    words = str(value or "").replace("_", " ").split(" ")
    return " ".join(_ACRONYMS.get(w, w) for w in words)


def when(value: object, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    """An ISO timestamp or datetime shown in UTC, without the `T` and the offset noise."""
    if value in (None, ""):
        return "—"
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(moment, datetime):
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(fmt)


@pass_context
def check_name(context: Context, name: object) -> str:
    """A release check's title: the product families' release tests and quality's own checks
    (QualityService.check_titles); a name nobody titles is shown as words."""
    request = context.get("request")
    titles = _app(request).quality.check_titles() if request is not None else {}
    return titles.get(str(name), human(name))


templates.env.filters.update(human=human, when=when, check_name=check_name)


def _app(request: Request) -> App:
    application: App = request.app.state.nearfab
    return application


@contextmanager
def signing(request: Request, signer: Actor | None) -> Iterator[None]:
    """Around a use case that checks `signer`'s password: the login throttle (429 after too
    many failures from this client, a failure counted, a success clearing them). None: no
    password in the form, nothing to throttle."""
    if signer is None:
        yield
        return
    with throttled(login_throttle(request), signer.username, client_of(request)):
        yield


def signer_of(actor: Actor | None, form: Mapping[str, Any]) -> Actor | None:
    """The person a posted form e-signs for: `actor` when the form carries a password."""
    return actor if "password" in form else None


def decided_here(application: App) -> bool:
    """Whether this process takes the control site's decisions (QP release, master-file
    changes, change controls, home-build approval): not at a site node, where their forms are
    not offered (the services refuse them there anyway: common/node.py)."""
    return not application.network.node.site_node


class LoginRequired(Exception):
    """Nobody is logged in: a page sends them to the login form, a file answers 401."""

    def __init__(self, *, file: bool) -> None:
        super().__init__("log in first")
        self.file = file


class PageRefused(Exception):
    """The matrix refuses the logged-in person the route's declared permission."""

    def __init__(self, actor: Actor, error: DomainError, *, file: bool) -> None:
        super().__init__(error.message)
        self.actor, self.error, self.file = actor, error, file


def web_actor(request: Request) -> Actor | None:
    """The person behind the signed cookie's server-side session (`user_sessions`, kind web):
    None when there is none, or it ended, expired (idle or absolute) or was revoked."""
    secret = request.session.get("sid")
    if not secret:
        return None
    application = _app(request)
    try:
        with application.uow() as uow:
            return application.users.actor_for_token(uow, str(secret), kind="web")
    except Unauthenticated as exc:
        if exc.code == "totp_required":
            return None  # half logged in: the TOTP step (/login/totp) may still finish it
        request.session.clear()
        if exc.code == "session_expired":
            request.session["login_message"] = exc.message
        return None


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return str(token)


def _check_csrf(request: Request, token: str) -> None:
    if not token or not secrets.compare_digest(token, str(request.session.get("csrf", ""))):
        raise Forbidden(
            "the form expired or came from elsewhere; reload the page", field="csrf_token"
        )


def checked_step(
    request: Request,
    application: App,
    form: dict[str, str],
    step: Callable[[App, UnitOfWork, dict[str, str]], T],
    actor: Actor | None = None,
) -> T:
    """The form's CSRF token, then the use case in a unit of work of its own (blocking: the
    async routes call it in a worker thread). A form with a password is `actor`'s e-signature:
    its check is throttled like the login (`signing`)."""
    _check_csrf(request, form.get("csrf_token", ""))
    with signing(request, signer_of(actor, form)), application.uow() as uow:
        return step(application, uow, form)


def form_action(
    request: Request,
    csrf_token: str,
    act: Callable[[App, UnitOfWork], tuple[str | None, str]],
    *,
    flash_key: str,
    refused: Callable[[DomainError], Response],
    signer: Actor | None = None,
) -> Response:
    """A page form's post: its CSRF token, then `act` (the use case) in a unit of work of its
    own, returning the message to flash under `flash_key` (None: none) and where to go (303);
    read what the message needs inside `act`, while the unit of work is open. A refusal
    (DomainError, of the token or the use case) is answered by `refused`, the page's own.
    `signer`: the form carries an e-signature (a password): its checks are throttled per
    person and client like the login (`signing`), so a page cannot be used to guess."""
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        with signing(request, signer), application.uow() as uow:
            message, to = act(application, uow)
    except DomainError as exc:
        return refused(exc)
    if message is not None:
        request.session[flash_key] = message
    return RedirectResponse(to, status_code=303)


def render(
    request: Request, name: str, actor: Actor | None, *, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {"actor": actor, "csrf_token": _csrf(request), **ctx},
        status_code=status_code,
    )


ActorOpt = Annotated[Actor | None, Depends(web_actor)]


def page(permission: Permission, *, file: bool = False, gate: bool = True) -> Any:
    """A web route's declared permission, the pages' `api.deps.allowed`: the logged-in person
    or a login redirect (401 for a `file` such as an image or a JSON fragment), refused before
    the route runs when the matrix does not give their role `permission`. The record's site is
    checked after it is loaded, by the same service-level `authorize` the API calls (a record
    of a site the person does not see is answered as not found: see `hidden`).
    `api.deps.declared_pages` reads this declaration for the route-matrix test; `gate=False`
    leaves the refusal to the service, whose refused attempts are records (a QP decision)."""

    def dependency(request: Request) -> Actor:
        actor = web_actor(request)
        if actor is None:
            raise LoginRequired(file=file)
        try:
            if gate:
                authorize_declared(actor, permission)
        except Forbidden as exc:
            raise PageRefused(actor, exc, file=file) from None
        return actor

    dependency.permission = permission  # type: ignore[attr-defined]
    return Depends(dependency)


NOT_SEEN = "no such record, or it belongs to a site you do not see"


def hidden(exc: DomainError, ref: str | None = None) -> DomainError:
    """What a page says about a record it may not show: a record of another site is answered
    exactly as a record that does not exist (404), so a page never confirms that an id exists
    elsewhere; a refusal by role stays 403. `ref` is what the person asked for."""
    if isinstance(exc, NotFound) or exc.code == "other_site":
        return NotFound(f"{ref!r}: {NOT_SEEN}" if ref else NOT_SEEN)
    return exc


def _need_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)


def _not_found(
    request: Request, actor: Actor, exc: DomainError, ref: str | None = None
) -> HTMLResponse:
    """A page, not the API's JSON, when a link points at a record that does not exist or
    belongs to a site the user does not see (the two answered alike: `hidden`)."""
    shown = hidden(exc, ref)
    return render(
        request, "not_found.html", actor, error=shown.message, status_code=shown.http_status
    )


def refused_page(request: Request, exc: PageRefused) -> Response:
    """The answer to a role the route's declared permission refuses (server.py wires it)."""
    if exc.file:
        return JSONResponse({"error": exc.error.to_dict()}, status_code=exc.error.http_status)
    return render(
        request,
        "not_found.html",
        exc.actor,
        title="Not allowed",
        error=exc.error.message,
        status_code=exc.error.http_status,
    )


def login_first(request: Request, exc: LoginRequired) -> Response:
    """Nobody logged in: pages go to the login form and come back; files answer 401."""
    if exc.file:
        error = Unauthenticated("log in first (a web session is required)")
        return JSONResponse({"error": error.to_dict()}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, actor: ActorOpt, next: str = "/") -> HTMLResponse:
    message = request.session.pop("login_message", None)
    return render(request, "login.html", actor, next=next, error=None, message=message)


def _safe_next(next: str) -> str:
    # only paths on this site: "//host" and "/\\host" would leave it
    return next if next.startswith("/") and not next.startswith(("//", "/\\")) else "/"


@router.post("/login")
def login_submit(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    application = _app(request)
    throttle, client = login_throttle(request), client_of(request)
    try:
        _check_csrf(request, csrf_token)
        with throttled(throttle, username, client), application.uow() as uow:
            secret, _user, row = application.users.start_session(
                uow, username, password, kind="web", client=client
            )
    except DomainError as exc:
        if exc.code == "password_expired":  # expired or temporary: choose a new one first
            request.session.clear()
            request.session["password_user"] = username
            request.session["login_message"] = exc.message
            return RedirectResponse("/password/change", status_code=303)
        return render(
            request, "login.html", None, next=next, error=exc.message, status_code=exc.http_status
        )
    request.session.clear()
    request.session["sid"] = secret  # the cookie holds the session's secret, the server its hash
    if row.pending == "totp":
        request.session["next"] = _safe_next(next)
        return RedirectResponse("/login/totp", status_code=303)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> RedirectResponse:
    _check_csrf(request, csrf_token)  # another site must not log people out
    secret = request.session.get("sid")
    if secret:
        application = _app(request)
        with application.uow() as uow:
            application.users.logout(uow, str(secret))  # the server-side session ends too
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, actor: Annotated[Actor, page(Permission.NETWORK_READ)]) -> Response:
    application = _app(request)
    with application.uow() as uow:
        sites = network_view(application, uow)
        orders = application.orders.list_orders(uow, limit=15, actor=actor)
        # counts, queue and machines' work of the sites the person sees only
        if is_network_wide(actor, Permission.ORDER_READ):
            counts = application.orders.count_by_status(uow)
        else:
            mine = application.orders.list_orders(uow, limit=100_000, actor=actor)
            counts = dict(Counter(o.status for o in mine))
        if is_network_wide(actor, Permission.RELEASE_QUEUE_READ):
            pending = len(application.quality.pending(uow))
        elif can(actor, Permission.RELEASE_QUEUE_READ):
            pending = len(pending_view(application, uow, actor))
        else:
            pending = 0
        # notices to the treating prescribers of the person's sites (a result failed after
        # release), not yet acknowledged
        notices = (
            application.quality.followups.notices(uow, actor, unacknowledged=True)
            if can(actor, Permission.NOTICE_READ)
            else []
        )
        work: dict[str, list[dict[str, Any]]] = {}
        for job in application.scheduling.jobs(
            uow, JobStatus.RUNNING, JobStatus.TICKET_ISSUED, JobStatus.PLANNED
        ):
            if not can(actor, Permission.ORDER_READ, site_id=job.site_id):
                continue
            work.setdefault(job.machine_id, []).append(
                {
                    "order_id": job.order_id,
                    "status": job.status,
                    "planned_finish": job.planned_finish,
                }
            )
    for site in sites:
        for machine in site["machines"]:
            jobs = work.get(machine["id"], [])
            machine["current"] = next((j for j in jobs if j["status"] == "running"), None)
            machine["queued"] = sum(1 for j in jobs if j["status"] != "running")
    lifecycle = [s.value for s in OrderStatus]
    ordered = sorted(
        counts.items(), key=lambda kv: lifecycle.index(kv[0]) if kv[0] in lifecycle else 99
    )
    return render(
        request,
        "overview.html",
        actor,
        sites=sites,
        orders=orders,
        counts=ordered,
        pending=pending,
        notices=notices,
        refresh=5,
    )


# the orders list and the prescription form: web/orders.py


@router.get("/orders/{order_id}", response_class=HTMLResponse)
def order_page(
    request: Request, order_id: str, actor: Annotated[Actor, page(Permission.ORDER_READ)]
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            view = order_view(application, uow, actor, order_id)
            order_site = application.orders.get(uow, order_id).site_id
    except (NotFound, Forbidden) as exc:
        return _not_found(request, actor, exc, order_id)
    return render(
        request,
        "order.html",
        actor,
        order=view,
        # the treating physician may ask for an exceptional release of its batch
        may_request=can(actor, Permission.RELEASE_EXCEPTIONAL_REQUEST, site_id=order_site),
        flash=request.session.pop("order_flash", None),
        error=request.session.pop("order_error", None),
    )


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch_page(
    request: Request, batch_id: str, actor: Annotated[Actor, page(Permission.BATCH_READ)]
) -> Response:
    application = _app(request)
    try:
        with application.uow() as uow:
            view = batch_view(application, uow, actor, batch_id)
            master_file = application.master_files.get(uow, view["master_file"]["id"])
            # the per-unit measurement to chart, as the product's family reads its document
            kit = application.families.get(master_file.product_family).machines
            series = kit.measurement_series(
                view["measurements"], view["design"] or {}, dict(master_file.cqa_specs or {})
            )
            design = kit.design_summary(view["design"] or {})
            title = record_title(kit)  # the family's name for the record (production.kit)
            parameters = dict(master_file.process_parameters or {})
            # the master-file steps, the audit-trail review and what blocks release
            controls, trail, may = _record_controls(application, uow, actor, view)
            batch_row = application.production.get(uow, view["id"])
            lab = application.quality.lab_results.view(uow, batch_row)  # laboratory results
    except (NotFound, Forbidden) as exc:
        return _not_found(request, actor, exc, batch_id)
    chart = (
        measurement_chart_svg(
            list(series.values),
            series.target,
            series.tolerance_pct,
            label=series.label,
            unit=series.unit,
        )
        if series
        else ""
    )
    return render(
        request,
        "batch.html",
        actor,
        batch=view,
        record_title=title,
        chart=chart,
        series=series,
        design=design,
        parameters=parameters,
        controls=controls,
        trail=trail,
        may=may,
        lab=lab,
        message=request.session.pop("batch_flash", None),
        error=request.session.pop("batch_error", None),
    )


def _record_controls(
    application: App, uow: Any, actor: Actor, view: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, bool]]:
    site = view["site"]["id"]
    may = {
        "sign": can(actor, Permission.BATCH_STEP_SIGN, site_id=site),
        "verify": can(actor, Permission.BATCH_ENTRY_VERIFY, site_id=site),
        "deviate": can(actor, Permission.DEVIATION_OPEN, site_id=site),
        "review": can(actor, Permission.AUDIT_TRAIL_REVIEW, site_id=site),
        "trail": can(actor, Permission.AUDIT_READ, site_id=site),
        "followup": can(actor, Permission.RELEASE_FOLLOWUP_ENTER, site_id=site),
        "lab": can(actor, Permission.LAB_RESULT_ENTER, site_id=site),
    }
    controls = record_controls_view(application, uow, actor, view["id"])
    trail = batch_trail_view(application, uow, actor, view["id"]) if may["trail"] else None
    return controls, trail, may


@router.get("/release", response_class=HTMLResponse)
def release_page(
    request: Request, actor: Annotated[Actor, page(Permission.RELEASE_QUEUE_READ)]
) -> Response:
    application = _app(request)
    message = request.session.pop("flash", None)
    with application.uow() as uow:
        queue = _with_blockers(application, uow, actor, pending_view(application, uow, actor))
    return render(
        request,
        "release.html",
        actor,
        queue=queue,
        message=message,
        error=None,
        session_signed=session_has_signed(application, actor),
    )


def _with_blockers(
    application: App, uow: Any, actor: Actor, queue: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each queued batch with why its release is blocked now (steps, audit-trail review, and
    for its signatory whether they are assigned to its master file), who signs it (the
    family's `release_signatory`: `signatory`, `signatory_title`) and whether this actor may
    (`may_sign`: "Sign…" is offered to that role only)."""
    quality = application.quality
    asked = []
    for row in queue:
        batch = application.production.get(uow, row["batch_id"])
        signatory = quality.signatory_for(uow, batch)
        row["signatory"], row["signatory_title"] = signatory, signatory_title(signatory)
        row["may_sign"] = (
            quality.may_sign(actor, signatory)
            and can(actor, Permission.RELEASE_DECIDE, site_id=batch.site_id)
            and decided_here(application)
        )
        asked.append((batch, actor if quality.may_sign(actor, signatory) else None, signatory))
    blockers = quality.records.release_blockers_of(uow, asked)  # every row's, read together
    # at a site node: the release dossier last sent to the control site's QP (releases.py)
    sent = (
        application.dossiers.last_sent(uow, [row["batch_id"] for row in queue])
        if application.dossiers is not None
        else {}
    )
    for row in queue:
        row["blockers"] = [b.to_dict() for b in blockers[row["batch_id"]]]
        if application.dossiers is not None:  # a site node: sent, or not yet
            row["dossier"] = sent.get(row["batch_id"]) or {"sent_at": None}
    return queue


def session_has_signed(application: App, actor: Actor) -> bool:
    """Whether this web session has signed before: then the password alone signs again
    (21 CFR 11.200(a)(1)); the first signing needs the user ID too."""
    if actor.session_id is None:
        return False
    with application.uow() as uow:
        row = application.users.session_for(uow, actor.session_id)
        return row is not None and row.first_signed_at is not None


@router.post("/release/{batch_id}")
def release_sign(
    request: Request,
    batch_id: str,
    actor: Annotated[Actor, page(Permission.RELEASE_DECIDE, gate=False)],
    decision: Annotated[str, Form()],
    meaning: Annotated[str, Form()],
    password: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    record_hash: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    exceptional: Annotated[str, Form()] = "",
) -> Response:
    application = _app(request)
    try:
        _check_csrf(request, csrf_token)
        throttle = login_throttle(request)
        with throttled(throttle, actor.username, client_of(request)), application.uow() as uow:
            review = application.quality.decide(
                uow,
                actor,
                batch_id,
                decision=decision,
                meaning=meaning,
                reason=reason or None,
                record_hash=record_hash or None,
                **signature(password, username, totp),
                # the release of an out-of-specification batch at the physician's request
                exceptional=bool(exceptional),
            )
    except DomainError as exc:
        shown = hidden(exc, batch_id)  # another site's batch is answered as an unknown one
        with application.uow() as uow:
            queue = _with_blockers(application, uow, actor, pending_view(application, uow, actor))
        number = next((r["batch_number"] for r in queue if r["batch_id"] == batch_id), batch_id)
        return render(
            request,
            "release.html",
            actor,
            queue=queue,
            message=None,
            error=f"Batch {number} not signed: {shown.message}",
            failed_batch=batch_id,
            status_code=shown.http_status,
            session_signed=session_has_signed(application, actor),
        )
    with application.uow() as uow:
        number = application.production.get(uow, batch_id).batch_number
    request.session["flash"] = f"Batch {number} {review.status} (signature {review.signature_id})."
    return RedirectResponse("/release", status_code=303)


@router.get("/dispense", response_class=HTMLResponse)
def dispense_page(
    request: Request, actor: Annotated[Actor, page(Permission.PACK_VERIFY)]
) -> Response:
    return render(request, "dispense.html", actor, result=None, error=None)


@router.post("/dispense", response_class=HTMLResponse)
def dispense_submit(
    request: Request,
    actor: Annotated[Actor, page(Permission.PACK_VERIFY)],
    scan: Annotated[str, Form()],
    patient_ref: Annotated[str, Form()] = "",
    patient: Annotated[str, Form()] = "",
    birth_date: Annotated[str, Form()] = "",
    prescription_id: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "dispense",
) -> Response:
    """Check only (the verification status) or check and dispense; a refusal shows the same
    status words as POST /api/v1/verify. The patient is identified as the hospital knows them
    (`patient`: NHS number, hospital number, wristband scan or PT-… pseudonym; the birth date
    where the site requires it; the prescription ID): docs/patient-identification.md."""
    from nearfab.orders import PresentedIdentifiers

    application = _app(request)
    presented = PresentedIdentifiers(
        patient_ref=patient_ref or None,
        patient=patient or None,
        birth_date=birth_date or None,
        prescription_id=prescription_id or None,
    )
    entered = {
        "scan": scan,
        "patient": patient or patient_ref,
        "birth_date": birth_date,
        "prescription_id": prescription_id,
    }
    # refusal codes of a dispense -> the verification status the pharmacist sees
    status_of = {
        "unknown_unit": "unknown",
        "label_mismatch": "unknown",
        "record_changed": "not_released",
    }
    try:
        _check_csrf(request, csrf_token)
        if action == "verify":
            with application.uow() as uow:
                checked = application.custody.verify(uow, actor, scan=scan, patient=presented)
                pack = pack_card(application, uow, checked.unit_id) if checked.unit_id else None
            # the scan and the patient stay in the form: "Check and dispense" needs no rescan
            return render(
                request,
                "dispense.html",
                actor,
                result=None,
                error=None,
                verification=checked.to_dict(),
                verdict=verdict(checked.status.value),
                pack=pack,
                form=entered,
            )
        with application.uow() as uow:
            result = application.custody.dispense(uow, actor, scan=scan, patient=presented)
            pack = pack_card(application, uow, result.unit.id)
    except DomainError as exc:
        status = status_of.get(exc.code or "", exc.code)
        return render(
            request,
            "dispense.html",
            actor,
            result=None,
            error=exc.message,
            status=status,
            verdict=verdict(status),
            form=entered,
            status_code=exc.http_status,
        )
    return render(
        request,
        "dispense.html",
        actor,
        error=None,
        verdict="Handed over",
        pack=pack,
        result={
            "serial": result.unit.serial,
            "order_id": result.unit.order_id,
            "order_complete": result.order_complete,
            "patient": result.patient_match.to_dict() if result.patient_match else None,
        },
    )


@router.get("/packs/{unit_id}/label.png")
def pack_label(
    request: Request, unit_id: str, actor: Annotated[Actor, page(Permission.TRACE_READ, file=True)]
) -> Response:
    from nearfab.custody import render_label

    application = _app(request)
    try:
        with application.uow() as uow:
            authorize_pack(uow, actor, unit_id)  # the API's check: making or ordering site
            contents = application.custody.labels(uow, unit_id)
    except (NotFound, Forbidden) as exc:
        shown = hidden(exc, unit_id)  # another site's pack is answered as an unknown one
        return JSONResponse({"error": shown.to_dict()}, status_code=shown.http_status)
    return Response(render_label(contents[0], "png"), media_type="image/png")


@router.get("/api/docs", response_class=HTMLResponse)
def api_docs(request: Request, actor: ActorOpt) -> Response:
    """The API reference, rendered here from the OpenAPI schema (no CDN: works offline)."""
    spec = request.app.openapi()
    operations = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            params = [
                p["name"] + (" (required)" if p.get("required") else "")
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "tag": (op.get("tags") or ["-"])[0],
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "params": params,
                    "body": ref.rsplit("/", 1)[-1] if ref else ("JSON" if body else ""),
                }
            )
    operations.sort(key=lambda o: (o["tag"], o["path"], o["method"]))
    return render(
        request,
        "api_docs.html",
        actor,
        operations=operations,
        title=spec.get("info", {}).get("title", "nearfab"),
    )
