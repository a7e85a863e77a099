"""The FastAPI application: API, web pages, local static files; and the serve commands."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from nearfab import __version__
from nearfab.api.accounts import router as accounts_api
from nearfab.api.audit import router as audit_api
from nearfab.api.comparability import router as comparability_api
from nearfab.api.custody import router as custody_api
from nearfab.api.deps import domain_error_handler, overflow_handler
from nearfab.api.doses import router as doses_api
from nearfab.api.errors import install_error_handlers
from nearfab.api.limits import BodyLimitMiddleware, body_limits
from nearfab.api.monitoring import router as monitoring_api
from nearfab.api.planning import router as planning_api
from nearfab.api.qa import router as qa_api
from nearfab.api.records import router as records_api
from nearfab.api.release import router as release_api
from nearfab.api.routes import router as api_router
from nearfab.api.security import LoginThrottle, SecurityHeaders
from nearfab.api.vigilance import router as vigilance_api
from nearfab.api.worklist import router as worklist_api
from nearfab.bootstrap import App, build_app
from nearfab.common.errors import DomainError
from nearfab.config import Settings
from nearfab.identity import KeyMismatch
from nearfab.web.accounts import router as account_pages
from nearfab.web.appointments import router as appointment_pages
from nearfab.web.audit import router as audit_pages
from nearfab.web.builds import router as build_pages
from nearfab.web.chain import router as chain_pages
from nearfab.web.changecontrol import router as change_control_pages
from nearfab.web.comparability import router as comparability_pages
from nearfab.web.custody import router as custody_pages
from nearfab.web.doses import router as dose_pages
from nearfab.web.exceptional import router as exceptional_pages
from nearfab.web.masterfiles import router as master_file_pages
from nearfab.web.monitoring import router as monitoring_pages
from nearfab.web.nav import menu as _menu  # noqa: F401 - the main menu's template global
from nearfab.web.node import router as node_pages
from nearfab.web.orders import router as order_pages
from nearfab.web.pages import LoginRequired, PageRefused, login_first, refused_page
from nearfab.web.pages import router as pages_router
from nearfab.web.planning import router as planning_pages
from nearfab.web.qa import router as qa_pages
from nearfab.web.records import router as records_pages
from nearfab.web.refusals import install_page_handlers
from nearfab.web.remote import router as remote_pages
from nearfab.web.vigilance import router as vigilance_pages
from nearfab.web.worklist import router as worklist_pages

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger(__name__)


def _session_secret(application: App) -> str:
    if application.settings.session_secret:
        return application.settings.session_secret
    path = Path(application.settings.data_dir) / "keys" / "session.key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never world-readable
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def create_web_app(application: App) -> FastAPI:
    web = FastAPI(
        title="nearfab",
        version=__version__,
        description="Point-of-care manufacturing network: prescription to patient.",
        # Swagger UI would load from a CDN; hospitals run offline, so /api/docs is our own page
        docs_url=None,
        openapi_url="/api/v1/openapi.json",
        redoc_url=None,
    )
    web.state.nearfab = application
    # a body over its path's limit is refused (413) before anything reads or parses it; the
    # session and security-header middlewares wrap it, so the refusal carries their headers
    web.add_middleware(
        BodyLimitMiddleware,
        limits=body_limits(application.settings),
        default=application.settings.max_body_bytes,
    )
    web.add_middleware(
        SessionMiddleware,
        secret_key=_session_secret(application),
        session_cookie="nearfab_session",
        same_site="strict",
        https_only=application.settings.secure_cookies,
        max_age=8 * 3600,
    )
    web.add_middleware(SecurityHeaders)
    web.state.login_throttle = LoginThrottle()
    # one error shape everywhere: {"error": {"code", "field", "message"}}
    install_error_handlers(web)
    web.add_exception_handler(DomainError, domain_error_handler)
    web.add_exception_handler(OverflowError, overflow_handler)
    install_page_handlers(web)  # the same refusals as styled pages for browsers (not /api)
    web.add_exception_handler(LoginRequired, login_first)  # type: ignore[arg-type]
    web.add_exception_handler(PageRefused, refused_page)  # type: ignore[arg-type]
    web.include_router(api_router)
    web.include_router(accounts_api)
    web.include_router(audit_api)
    web.include_router(monitoring_api)
    web.include_router(custody_api)
    web.include_router(planning_api)
    web.include_router(records_api)
    web.include_router(release_api)
    web.include_router(comparability_api)
    web.include_router(doses_api)
    web.include_router(vigilance_api)
    web.include_router(qa_api)
    web.include_router(worklist_api)  # the caller's steps, verifications and QP work due now
    web.include_router(order_pages)  # /orders, /orders/new: before /orders/{order_id}
    web.include_router(pages_router)
    web.include_router(records_pages)
    web.include_router(worklist_pages)  # its forms post to records_pages' routes
    web.include_router(account_pages)
    web.include_router(planning_pages)  # before the /static mount: it serves vendor plotly.js
    web.include_router(monitoring_pages)
    web.include_router(custody_pages)
    web.include_router(audit_pages)
    web.include_router(comparability_pages)
    web.include_router(qa_pages)
    web.include_router(change_control_pages)  # master-file change control, under /qa
    web.include_router(build_pages)  # the control site's approval of supervised builds
    web.include_router(master_file_pages)  # versions and their QP approval
    web.include_router(dose_pages)  # observations and dose proposals of an order
    web.include_router(vigilance_pages)  # adverse events reported and traced
    web.include_router(node_pages)  # this node's replication (docs/replication.md)
    web.include_router(remote_pages)  # the site nodes' batches released at the control node
    for chain_router in (chain_pages, appointment_pages, exceptional_pages):
        web.include_router(chain_router)  # the chain of identity and its release steps
    web.mount("/static", StaticFiles(directory=STATIC), name="static")
    return web


def _start(settings: Settings, **kwargs: Any) -> App:
    try:
        application = build_app(settings, **kwargs)
    except KeyMismatch as exc:
        raise SystemExit(f"nearfab: cannot start: {exc}") from None
    try:
        application.start_telemetry()  # networked mode only (NEARFAB_MQTT_URL)
    except ConnectionError as exc:
        raise SystemExit(f"nearfab: cannot start: {exc}") from None
    try:
        application.start_replication()  # a node with NEARFAB_REPLICATION_URL only
    except ValueError as exc:  # a malformed broker address
        raise SystemExit(f"nearfab: cannot start: {exc}") from None
    return application


def serve(settings: Settings, *, host: str, port: int) -> None:
    import uvicorn

    application = _start(settings)
    try:
        uvicorn.run(
            create_web_app(application),
            host=host,
            port=port,
            log_level="info",
            # X-Forwarded-For is read by api.deps.client_of, from NEARFAB_TRUSTED_PROXIES only
            proxy_headers=False,
        )
    finally:
        application.shutdown()


def serve_demo(settings: Settings, *, host: str, port: int, speed: float) -> None:
    """Seed when the database is new, then serve with machines and prescriptions flowing."""
    import uvicorn

    from nearfab.demo import is_seeded, seed
    from nearfab.demo_loop import DemoLoop

    application = _start(settings, machine_speed=speed)
    password = settings.demo_password
    if not is_seeded(application):
        try:
            result = seed(application, password)
        except RuntimeError as exc:
            raise SystemExit(f"nearfab demo: {exc}") from None
        password = result.password
        print(f"demo network seeded in {settings.data_dir}")
        print(f"users: {', '.join(result.usernames)}")
        if result.generated:
            print(f"generated password for every demo user: {result.password}")
    loop = DemoLoop(application, qp_password=password)
    loop.start()
    if not password:
        print("QP autopilot off: set NEARFAB_DEMO_PASSWORD to the demo users' password")
    print(f"nearfab demo on http://{host}:{port}/ (API docs: /api/docs)")
    try:
        uvicorn.run(
            create_web_app(application),
            host=host,
            port=port,
            log_level="warning",
            # X-Forwarded-For is read by api.deps.client_of, from NEARFAB_TRUSTED_PROXIES only
            proxy_headers=False,
        )
    finally:
        loop.stop()
        application.shutdown()
