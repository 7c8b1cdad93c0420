"""The collector: a FastAPI app over the results store (docs/collector-api.md).

Auth and the body-size bound are enforced by :class:`~parbench.collector.guard.Guard`, an ASGI
middleware, before any body is read.  The endpoints (:mod:`parbench.collector.routes`) reach the
store and the served fixture set through the app's state; every write is one store transaction.
Every error is answered with the same JSON body (``error``, ``reason``, and ``errors`` for
validation), never HTML.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

import parbench
from parbench.collector.fixtures_view import FixtureServeError, FixtureView
from parbench.collector.guard import API_PREFIX, Guard, check_token, error_response
from parbench.collector.routes import API_VERSION, ROUTERS, UnknownFixture
from parbench.errors import ConfigError, RunConflictError, RunNotFoundError, StoreError
from parbench.history.store import Store
from parbench.records.device import MAX_SAMPLES_PER_REQUEST

log = logging.getLogger("parbench.collector")

__all__ = ["API_PREFIX", "API_VERSION", "DEFAULT_MAX_BODY_MB", "create_app"]

DEFAULT_MAX_BODY_MB = 8


def _validation_reason(
    errors: list[dict[str, Any]], json_sent: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """A one-line reason naming the first bad field, and a JSON-safe error list."""
    clean = []
    for e in errors[:50]:
        loc = [x if isinstance(x, int | str) else str(x) for x in e.get("loc", ())]
        clean.append({"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    if not clean:
        return "invalid request", clean

    def where(loc: list) -> str:
        out = ""
        for part in loc:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += ("." if out else "") + part
        return out or "request"

    first = clean[0]
    reason = f"{where(first['loc'])}: {first['msg'].removeprefix('Value error, ')}"
    if first["type"] == "json_invalid":
        detail = (errors[0].get("ctx") or {}).get("error", "")
        reason = f"body is not valid JSON ({detail} at character {first['loc'][-1]})"
    elif first["loc"] == ["body"] and not json_sent:
        reason = "the body must be JSON sent with 'Content-Type: application/json'"
    if len(clean) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return reason, clean


def _unparsable_reason(cause: BaseException | None) -> str:
    if isinstance(cause, RecursionError):
        return "body is not readable JSON: it is nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return f"body is not readable JSON: it holds a number with more than {sys.get_int_max_str_digits()} digits"
    return "body is not valid JSON: it must be UTF-8 encoded JSON"


# -- error handlers ------------------------------------------------------------------------------


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    status, reason = exc.status_code, str(exc.detail)
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 400 and reason == "There was an error parsing the body":
        # FastAPI's answer to a body json.loads could not read: named by its cause
        status, reason = 422, _unparsable_reason(exc.__cause__)
    elif status == 405:
        # Starlette names only the first route matching the path; list every method it has
        # (from the routers themselves: included routers are not flat in app.router.routes).
        methods: set[str] = set()
        for router in ROUTERS:
            for route in router.routes:
                match, _ = route.matches(request.scope)
                if match != Match.NONE and getattr(route, "methods", None):
                    methods |= route.methods
        headers["Allow"] = ", ".join(sorted(methods))
        reason = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    return error_response(status, reason, headers=headers or None)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    reason, errors = _validation_reason(list(exc.errors()), "json" in content_type.lower())
    return error_response(422, reason, errors=errors)


async def _unknown_fixture(request: Request, exc: UnknownFixture) -> JSONResponse:
    loc = ["body", "results", exc.index]
    return error_response(422, str(exc), errors=[{"loc": loc, "msg": exc.problem, "type": "unknown_fixture"}])


async def _fixture_error(request: Request, exc: FixtureServeError) -> JSONResponse:
    if exc.status >= 500:
        return error_response(503, str(exc), "unavailable")
    return error_response(exc.status, str(exc), exc.code)


async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
    status = 404 if isinstance(exc, RunNotFoundError) else 409 if isinstance(exc, RunConflictError) else 422
    return error_response(status, str(exc))


async def _store_failure(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
    text = str(exc)
    if "locked" in text or "busy" in text:
        # The store stayed locked past busy_timeout: a passing condition; the client retries.
        return error_response(
            503, f"results store is busy ({text}); retry shortly", headers={"Retry-After": "2"}
        )
    log.error("results store failed on %s %s: %s", request.method, request.url.path, text)
    status = 507 if "full" in text else 500
    return error_response(
        status,
        f"results store failed ({text}); do not retry: the collector's operator must fix the store "
        "(permissions, disk space, the file itself)",
        "store",
    )


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    # Logged with its traceback by the server; the client gets JSON without internals.
    return error_response(
        500,
        f"internal error ({type(exc).__name__}) while handling {request.method} {request.url.path}; "
        "it is in the collector's log: report it rather than retrying",
        "internal",
    )


_HANDLERS: dict[Any, Any] = {
    Exception: _internal,
    HTTPException: _http_error,
    RequestValidationError: _invalid,
    UnknownFixture: _unknown_fixture,
    FixtureServeError: _fixture_error,
    StoreError: _store_error,
    sqlite3.OperationalError: _store_failure,
}


def create_app(
    store_path: str | Path,
    token: str,
    fixtures_dir: str | Path | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_MB << 20,
    cache_dir: str | Path | None = None,
) -> FastAPI:
    """The collector application over the store at `store_path` (created if missing).

    `fixtures_dir`, when given, is a fixture set served to devices; posted results must then
    name a model/variant/size it knows.  `cache_dir` holds zips of folder artifacts.
    """
    try:
        check_token(token, "127.0.0.1")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if max_body_bytes < 1024:
        raise ConfigError(f"max_body_bytes must be at least 1024, got {max_body_bytes}")
    store = Store(store_path)
    fixtures = FixtureView(fixtures_dir, cache_dir) if fixtures_dir is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # On a clean stop, move the WAL into the main file so that it alone is a complete copy.
        store.close(checkpoint=True)

    app = FastAPI(
        lifespan=lifespan,
        title="parbench collector",
        version=parbench.__version__,
        description="Serves a fixture set to devices and stores their runs and results. "
        "See docs/collector-api.md.",
        exception_handlers=_HANDLERS,
    )
    app.state.store = store
    app.state.fixtures = fixtures
    app.state.limits = {"max_body_bytes": max_body_bytes, "max_samples_per_request": MAX_SAMPLES_PER_REQUEST}
    app.add_middleware(Guard, token=token, max_body_bytes=max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    return app
