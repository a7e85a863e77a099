"""API contracts (issue 18 item 10): every JSON route of /api/v1 declares a typed response
model (`<Thing>Out`, pydantic) that forbids undeclared keys, so its OpenAPI schema is real
and a drift between what a read model returns and what is declared answers 500 instead of
passing silently. Routes answering CSV, PDF or images (or a file of their own) are exempt.
There is no allow-list: a new JSON route without a model fails here."""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.responses import Response

from nearfab.bootstrap import App
from nearfab.common.schemas import Out

from .conftest import TEST_PASSWORD

# the token answer predates the contracts (api/schemas.py, not a read model): it is typed, but
# its model does not forbid undeclared keys
NOT_FORBIDDING = {"TokenOut"}


def _api_routes() -> list[APIRoute]:
    from nearfab.api.accounts import router as accounts
    from nearfab.api.audit import router as audit
    from nearfab.api.comparability import router as comparability
    from nearfab.api.custody import router as custody
    from nearfab.api.doses import router as doses
    from nearfab.api.monitoring import router as monitoring
    from nearfab.api.planning import router as planning
    from nearfab.api.qa import router as qa
    from nearfab.api.records import router as records
    from nearfab.api.release import router as release
    from nearfab.api.routes import router as core
    from nearfab.api.vigilance import router as vigilance
    from nearfab.api.worklist import router as worklist

    routers = (core, accounts, audit, monitoring, custody, planning, records, release)
    routers += (comparability, qa)
    routers += (doses, vigilance)
    routers += (worklist,)
    return [r for router in routers for r in router.routes if isinstance(r, APIRoute)]


def _binary(route: APIRoute) -> bool:
    """A route answering CSV, PDF or an image: it returns a Response of its own."""
    returns = typing.get_type_hints(route.endpoint).get("return")
    if isinstance(returns, type) and issubclass(returns, Response):
        return True
    media = getattr(route.response_class, "media_type", None)
    return media not in (None, "application/json")


def _model_of(route: APIRoute) -> type[BaseModel] | None:
    """The pydantic model a route declares (for `list[X]`, X); None: untyped (dict, Any)."""
    declared: Any = route.response_model
    if typing.get_origin(declared) is list:
        (declared,) = typing.get_args(declared)
    if isinstance(declared, type) and issubclass(declared, BaseModel):
        return declared
    return None


def _json_routes(routes: Iterable[APIRoute]) -> Iterator[tuple[tuple[str, str], APIRoute]]:
    for route in routes:
        if _binary(route):
            continue
        for method in sorted(route.methods):
            yield (method, route.path), route


def _nested_models(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        yield m
        for field in m.model_fields.values():
            stack = [field.annotation]
            while stack:
                t = stack.pop()
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
                stack.extend(typing.get_args(t))


def _untyped(routes: Iterable[APIRoute]) -> list[tuple[str, str]]:
    """JSON routes that declare no pydantic model."""
    return sorted(key for key, route in _json_routes(routes) if _model_of(route) is None)


def _loose(routes: Iterable[APIRoute]) -> list[str]:
    """`(method, path): Model` for every declared model, nested ones included, that accepts
    undeclared keys."""
    return sorted(
        {
            f"{key}: {m.__name__}"
            for key, route in _json_routes(routes)
            if (model := _model_of(route)) is not None
            for m in _nested_models(model)
            if m.model_config.get("extra") != "forbid" and m.__name__ not in NOT_FORBIDDING
        }
    )


def test_every_json_route_declares_a_typed_response_model() -> None:
    untyped = _untyped(_api_routes())
    assert not untyped, f"JSON routes without a response model (declare a <Thing>Out): {untyped}"


def test_every_response_model_forbids_undeclared_keys() -> None:
    """A key the read model adds without declaring it fails (500), it does not slip through."""
    loose = _loose(_api_routes())
    assert not loose, f"response models that accept undeclared keys: {loose}"


def test_all_json_routes_are_typed() -> None:
    keys = [key for key, _ in _json_routes(_api_routes())]
    typed = [key for key, route in _json_routes(_api_routes()) if _model_of(route) is not None]
    # 1 of 106 at the start of issue 18 item 10; every one of them (and those added since) now
    assert len(keys) >= 106 and len(typed) == len(keys)


# --- the checks above can fail: a throwaway router with each kind of route --------------------
class _PlainOut(BaseModel):  # a BaseModel that lets undeclared keys through
    x: int


class _InnerPlainOut(BaseModel):
    y: int


class _StrictOut(Out):
    x: int


class _WrapsPlainOut(Out):  # forbids, but a model nested in it does not
    inner: list[_InnerPlainOut | _StrictOut] | None


def _throwaway_routes() -> list[APIRoute]:
    router = APIRouter(prefix="/api/v1")

    @router.get("/untyped")
    def untyped() -> dict[str, Any]:
        return {}

    @router.post("/any", response_model=Any)
    def any_answer() -> Any:
        return {}

    @router.get("/list-of-dicts")
    def list_of_dicts() -> list[dict[str, Any]]:
        return []

    @router.get("/plain", response_model=_PlainOut)
    def plain() -> dict[str, Any]:
        return {"x": 1}

    @router.get("/nested", response_model=list[_WrapsPlainOut])
    def nested() -> list[dict[str, Any]]:
        return []

    @router.get("/strict", response_model=_StrictOut)
    def strict() -> dict[str, Any]:
        return {"x": 1}

    @router.get("/strict-list", response_model=list[_StrictOut])
    def strict_list() -> list[dict[str, Any]]:
        return []

    @router.get("/export.csv")
    def csv_file() -> Response:  # a file: exempt
        return Response("a,b\n", media_type="text/csv")

    @router.get("/note", response_class=PlainTextResponse)
    def note() -> str:  # text: exempt
        return "x"

    return [r for r in router.routes if isinstance(r, APIRoute)]


def test_the_contract_checks_fail_on_an_untyped_or_loose_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same checks, on a throwaway router: the untyped routes and the loose models (the
    nested one included) are named, typed strict ones and files are not; and the tests above
    fail once such routes are among the API's."""
    routes = _throwaway_routes()
    assert _untyped(routes) == [
        ("GET", "/api/v1/list-of-dicts"),
        ("GET", "/api/v1/untyped"),
        ("POST", "/api/v1/any"),
    ]
    assert _loose(routes) == [
        "('GET', '/api/v1/nested'): _InnerPlainOut",
        "('GET', '/api/v1/plain'): _PlainOut",
    ]
    real = _api_routes()
    monkeypatch.setattr(sys.modules[__name__], "_api_routes", lambda: real + routes)
    with pytest.raises(AssertionError, match=r"without a response model.*/api/v1/untyped"):
        test_every_json_route_declares_a_typed_response_model()
    with pytest.raises(AssertionError, match=r"accept undeclared keys.*_InnerPlainOut"):
        test_every_response_model_forbids_undeclared_keys()
    with pytest.raises(AssertionError):
        test_all_json_routes_are_typed()


def test_the_openapi_document_names_each_typed_answer(app: App) -> None:
    from nearfab.api.deps import declared_permissions
    from nearfab.web.server import create_web_app

    web = create_web_app(app)
    # the routers checked here are all the API the server mounts (/api/docs is an HTML page)
    served = {
        (method, path)
        for method, path, _ in declared_permissions(web)
        if path.startswith("/api/v1/")
    }
    checked = {(m, r.path) for r in _api_routes() for m in r.methods}
    assert len(served) >= 106 and served == checked, served ^ checked
    doc = web.openapi()
    for (method, path), route in _json_routes(_api_routes()):
        model = _model_of(route)
        assert model is not None, (method, path)
        status = str(route.status_code or 200)
        schema = doc["paths"][path][method.lower()]["responses"][status]["content"][
            "application/json"
        ]["schema"]
        ref = schema.get("$ref") or schema.get("items", {}).get("$ref", "")
        assert ref.endswith(f"/{model.__name__}"), (method, path, schema)
        if model.__name__ not in NOT_FORBIDDING:
            component = doc["components"]["schemas"][model.__name__]
            assert component.get("additionalProperties") is False, (method, path)


def _login(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_a_read_model_that_drifts_from_its_contract_answers_500(
    seeded: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network view grows a key nobody declared, or loses one that is declared: the API
    does not pass either on, it answers 500 (which every API test treats as a failure)."""
    import nearfab.api.routes as routes
    from nearfab.web.server import create_web_app

    client = TestClient(create_web_app(seeded), raise_server_exceptions=False)
    h = _login(client, "admin")
    ok = client.get("/api/v1/network", headers=h)
    assert ok.status_code == 200 and any(site["machines"] for site in ok.json())
    real = routes.network_view

    def extra_key(app: App, uow: Any) -> list[dict[str, Any]]:
        return [{**site, "secret_note": "x"} for site in real(app, uow)]

    def missing_key(app: App, uow: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in site.items() if k != "status"} for site in real(app, uow)]

    def wrong_type(app: App, uow: Any) -> list[dict[str, Any]]:
        return [{**site, "machines": "none"} for site in real(app, uow)]

    for drifted in (extra_key, missing_key, wrong_type):
        monkeypatch.setattr(routes, "network_view", drifted)
        r = client.get("/api/v1/network", headers=h)
        assert r.status_code == 500, (drifted.__name__, r.text)
        assert "secret_note" not in r.text


def test_run_charts_answer_their_contracts_with_and_without_models(seeded: App) -> None:
    """The chart routes of a run, before any model (values only) and with an approved SPC and
    MSPC model (limits, EWMA, T² and SPE): each answers 200 through its declared model, with
    the shape the model declares and the figures the methods define."""
    from tests import flow_helpers as fh

    from nearfab.web.server import create_web_app

    batches = []
    for _ in range(3):  # released runs on one printer: what models are trained from
        batch_id = fh.make_batch(seeded)
        fh.release(seeded, batch_id)
        batches.append(fh.batch(seeded, batch_id))
    runs = [b.job_id for b in batches]
    client = TestClient(create_web_app(seeded), raise_server_exceptions=False)
    h = _login(client, "qp")
    base = f"/api/v1/monitoring/runs/{runs[0]}"

    bare = client.get(f"{base}/charts", headers=h)
    assert bare.status_code == 200, bare.text
    assert bare.json()["model_id"] is None and bare.json()["charts"]
    for chart in bare.json()["charts"]:
        assert set(chart) == {"metric", "unit", "times", "values"}, chart
        assert len(chart["times"]) == len(chart["values"]) > 0
    assert client.get(f"{base}/mspc", headers=h).status_code == 404  # no MSPC model yet

    models = {}
    admin, qp = fh.actor(seeded, "admin"), fh.actor(seeded, "qp")
    for kind in ("spc", "mspc"):
        with seeded.uow() as uow:
            model = seeded.monitoring.train(
                uow,
                admin,
                kind=kind,
                master_file_code=batches[0].master_file_code,
                machine_type="tablet_printer",
                runs=runs,
            )
        with seeded.uow() as uow:
            seeded.monitoring.approve(
                uow, qp, model.id, password=TEST_PASSWORD, meaning="QP approval of model"
            )
        models[kind] = model

    charts = client.get(f"{base}/charts", headers=h)
    assert charts.status_code == 200, charts.text
    assert charts.json()["model_id"] == models["spc"].id
    limits = models["spc"].params["charts"]
    with_limits = [c for c in charts.json()["charts"] if "center" in c]
    assert {c["metric"] for c in with_limits} == set(limits) & {
        c["metric"] for c in charts.json()["charts"]
    }
    assert with_limits
    for chart in with_limits:
        p = limits[chart["metric"]]
        # individuals chart: centre ± L·σ (Shewhart; L from the model)
        assert chart["center"] == pytest.approx(p["center"])
        assert chart["lcl"] == pytest.approx(p["center"] - p["L_individuals"] * p["sigma"])
        assert chart["ucl"] == pytest.approx(p["center"] + p["L_individuals"] * p["sigma"])
        n = len(chart["values"])
        assert len(chart["ewma"]) == len(chart["ewma_lcl"]) == len(chart["ewma_ucl"]) == n
        assert all(0 <= f["index"] < n and f["signals"] for f in chart["flagged"])

    mspc = client.get(f"{base}/mspc", headers=h)
    assert mspc.status_code == 200, mspc.text
    m = mspc.json()
    assert m["model_id"] == models["mspc"].id
    assert len(m["times"]) == len(m["t2"]) == len(m["spe"]) == len(m["alarm"]) > 0
    index = len(m["t2"]) // 2
    c = client.get(f"{base}/contributions", params={"index": index}, headers=h)
    assert c.status_code == 200, c.text
    got = c.json()
    assert got["t2"] == pytest.approx(m["t2"][index]) and got["spe"] == pytest.approx(
        m["spe"][index]
    )
    # the per-variable contributions add up to the statistic (Westerhuis, Gurden & Smilde
    # 2000 for T²; squared residuals for SPE, Miller, Swanson & Heckler 1998)
    assert len(got["t2_contributions"]) == len(got["metrics"]) == len(got["values"])
    assert sum(got["t2_contributions"]) == pytest.approx(got["t2"], rel=1e-6, abs=1e-9)
    assert sum(got["spe_contributions"]) == pytest.approx(got["spe"], rel=1e-6, abs=1e-9)
