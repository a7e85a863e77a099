"""One error shape everywhere: `{"error": {"code", "field", "message"}}` (README,
docs/interfaces.md).

Domain errors have had it from the start; these handlers give it to what the framework answers
itself: unknown paths and methods (HTTPException), malformed JSON, a body of the wrong content
type, validation errors, JSON nested too deeply to read, and, as the last net, an unexpected
server error (logged, its details never sent).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
}


def error_body(code: str, field: str | None, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "field": field, "message": message}}


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such path: {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    field = None
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        # FastAPI's own answer when reading the body fails (e.g. JSON nested too deeply)
        field, detail = "$", "the request body could not be read (malformed or nested too deeply)"
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(code, field, detail),
        headers=getattr(exc, "headers", None),
    )


def _is_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Malformed or invalid request input, named by its field."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first: Any = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    kind = first.get("type")
    loc = tuple(first.get("loc", ()))
    if kind == "json_invalid":
        message = f"the request body is not valid JSON ({first.get('msg')})"
        return JSONResponse(status_code=422, content=error_body("validation_failed", "$", message))
    if loc[:1] == ("body",) and request.method in ("POST", "PUT", "PATCH") and len(loc) == 1:
        # the whole body is wrong: usually not JSON at all
        if not _is_json(request) and request.url.path.startswith("/api/"):
            shown = request.headers.get("content-type") or "none"
            message = f"the request body must be JSON (Content-Type: application/json), not {shown}"
            return JSONResponse(
                status_code=422, content=error_body("validation_failed", "$", message)
            )
        message = f"the request body: {first.get('msg')}"
        return JSONResponse(status_code=422, content=error_body("validation_failed", "$", message))
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    field = ".".join(parts) or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return JSONResponse(status_code=422, content=error_body("validation_failed", field, message))


async def recursion_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """JSON nested deeper than a parser can follow is the caller's error, not the server's."""
    return JSONResponse(
        status_code=422,
        content=error_body("validation_failed", "$", "the request body is nested too deeply"),
    )


async def server_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        status_code=500,
        content=error_body(
            "internal_error", None, "the server could not complete the request (logged)"
        ),
    )


class ErrorDetail(BaseModel):
    code: str
    field: str | None
    message: str


class ErrorOut(BaseModel):
    """The one error shape, as the OpenAPI schema declares it."""

    error: ErrorDetail


# what any operation may answer besides its success (405 only for undeclared methods)
DOCUMENTED_ERRORS = sorted(c for c in HTTP_CODES if c != 405)


def _document_errors(web: FastAPI) -> None:
    """Declare the error answers in the OpenAPI schema: every operation may answer the codes
    of DOCUMENTED_ERRORS with `ErrorOut` (422 included: the framework's default 422 schema,
    `{"detail": [...]}`, is not what the handlers above send)."""
    plain = web.openapi

    def openapi() -> dict[str, Any]:
        if web.openapi_schema:
            return web.openapi_schema
        schema = plain()
        models = schema.setdefault("components", {}).setdefault("schemas", {})
        error = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
        models.update(error.pop("$defs", {}))
        models["ErrorOut"] = error
        ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                for status in DOCUMENTED_ERRORS:
                    operation["responses"][str(status)] = {
                        "description": HTTP_CODES[status].replace("_", " "),
                        "content": ref,
                    }
        web.openapi_schema = schema
        return schema

    web.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(web: FastAPI) -> None:
    _document_errors(web)
    web.add_exception_handler(StarletteHTTPException, http_error_handler)
    web.add_exception_handler(RequestValidationError, validation_error_handler)
    web.add_exception_handler(RecursionError, recursion_error_handler)
    web.add_exception_handler(Exception, server_error_handler)
