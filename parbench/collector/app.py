"""The collector: a FastAPI app over the results store, and `parbench serve` to run it.

Auth and the body-size bound are enforced in one ASGI middleware, before any body is read, so
an unauthenticated or oversized request never reaches the store.  Endpoints are plain functions
(run in the thread pool); every write is one store transaction.
"""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import parbench
from parbench.collector.fixtures_view import FixtureServeError, FixtureView
from parbench.history.store import RunConflictError, RunNotFoundError, Store, StoreError
from parbench.records.device import (
    CompleteIn,
    ErrorOut,
    Health,
    ResultsIn,
    RunId,
    RunIn,
    RunList,
    RunsQuery,
    RunSummary,
    RunWithResults,
    StoredCounts,
)

API_PREFIX = "/api/v1"
API_VERSION = 1
DEFAULT_MAX_BODY_MB = 32
_OPEN_PATHS = {f"{API_PREFIX}/health"}
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation",
    503: "unavailable",
}


def _error_body(status: int, reason: str, code: str | None = None, **more: Any) -> dict[str, Any]:
    return {"error": code or _CODES.get(status, "error"), "reason": reason, **more}


class _Guard:
    """Bearer-token check and body-size bound for every /api/ request (health is open)."""

    def __init__(self, app: ASGIApp, token: str, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode()
        self.max_body = max_body_bytes

    async def _refuse(self, send: Send, status: int, reason: str, headers: list | None = None) -> None:
        response = JSONResponse(_error_body(status, reason), status_code=status, headers=dict(headers or []))
        await response({"type": "http"}, _no_receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        path = scope["path"]
        if path.startswith("/api/") and path.rstrip("/") not in _OPEN_PATHS:
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if not auth:
                reason = "missing 'Authorization: Bearer <token>' header (the token is printed by `parbench serve`)"
            elif scheme.lower() != b"bearer" or not given.strip():
                reason = "the Authorization header must be 'Bearer <token>'"
            elif not secrets.compare_digest(given.strip(), self.token):
                reason = "wrong token"
            else:
                reason = ""
            if reason:
                await self._refuse(send, 401, reason, [("WWW-Authenticate", "Bearer")])
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await self._refuse(send, 400, "Content-Length is not a number")
                return
            if n > self.max_body:
                await self._refuse(
                    send,
                    413,
                    f"body of {n} bytes is over the collector's limit of "
                    f"{self.max_body} bytes: post results in smaller batches",
                )
                return
        received = 0
        limit = self.max_body

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes HTTPException raised while reading the body through to its handler.
                    raise StarletteHTTPException(
                        413,
                        f"body is over the collector's limit of {limit} bytes: "
                        "post results in smaller batches",
                    )
            return message

        await self.app(scope, bounded_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


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


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": desc}
    for code, desc in (
        (401, "missing or wrong bearer token"),
        (404, "unknown run or file"),
        (409, "conflicting content for an existing id"),
        (413, "body too large"),
        (422, "invalid request (malformed JSON, wrong types, out of bounds, unknown model)"),
    )
}
_FILE_ERRORS = {k: v for k, v in _ERRORS.items() if k in (401, 404, 422)} | {
    400: {"model": ErrorOut, "description": "path refused (traversal)"}
}


_bearer = HTTPBearer(auto_error=False, description="the token printed by `parbench serve`")


def _declare_auth(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Documents the bearer scheme in OpenAPI; the check itself is done by the middleware
    (module level: FastAPI resolves these annotations in the module's namespace)."""


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
    if not token or any(c.isspace() for c in token) or not token.isascii():
        raise ValueError("the collector token must be a non-empty ASCII string without spaces")
    if max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes must be at least 1024, got {max_body_bytes}")
    store = Store(store_path)
    fixtures = FixtureView(fixtures_dir, cache_dir) if fixtures_dir is not None else None

    app = FastAPI(
        title="parbench collector",
        version=parbench.__version__,
        description="Serves a fixture set to devices and stores their runs and results. "
        "See docs/collector-api.md.",
    )
    app.state.store = store
    app.state.fixtures = fixtures
    app.add_middleware(_Guard, token=token, max_body_bytes=max_body_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status, reason = exc.status_code, str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if status == 400 and reason == "There was an error parsing the body":
            # FastAPI's answer to a body that is not UTF-8: malformed JSON like any other
            status, reason = 422, "body is not valid JSON: it must be UTF-8 encoded JSON"
        elif status == 405:
            # Starlette names only the first route matching the path; list every method it has.
            methods = set()
            for route in app.router.routes:
                match, _ = route.matches(request.scope)
                if match != Match.NONE and getattr(route, "methods", None):
                    methods |= route.methods
            headers["Allow"] = ", ".join(sorted(methods))
            reason = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
        return JSONResponse(_error_body(status, reason), status_code=status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        reason, errors = _validation_reason(list(exc.errors()), "json" in content_type.lower())
        return JSONResponse(_error_body(422, reason, errors=errors), status_code=422)

    @app.exception_handler(FixtureServeError)
    async def _fixture_error(request: Request, exc: FixtureServeError) -> JSONResponse:
        status = exc.status if exc.status < 500 else 503
        return JSONResponse(_error_body(status, str(exc), exc.code), status_code=status)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        status = (
            404 if isinstance(exc, RunNotFoundError) else 409 if isinstance(exc, RunConflictError) else 422
        )
        return JSONResponse(_error_body(status, str(exc)), status_code=status)

    @app.exception_handler(sqlite3.OperationalError)
    async def _busy(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # The store stayed locked past busy_timeout: a server-side condition; the client retries.
        return JSONResponse(
            _error_body(503, f"results store is busy ({exc}); retry shortly"),
            status_code=503,
            headers={"Retry-After": "2"},
        )

    # Routes sit on the app itself (not included routers) so that the 405 handler sees them all.
    auth = [Depends(_declare_auth)]

    @app.get("/api/v1/health", response_model=Health, tags=["service"])
    def health() -> Health:
        return Health(
            status="ok",
            api_version=API_VERSION,
            parbench=parbench.__version__,
            store_schema_version=store.schema_version(),
            fixtures=fixtures is not None,
            server_time_utc=_utc_now(),
        )

    def _need_fixtures() -> FixtureView:
        if fixtures is None:
            raise FixtureServeError("this collector serves no fixture set (start it with --fixtures DIR)")
        return fixtures

    @app.get(
        "/api/v1/fixtures/manifest",
        dependencies=auth,
        tags=["fixtures"],
        responses={
            200: {"content": {"application/json": {}}, "description": "manifest.json, byte for byte"},
            **{k: v for k, v in _ERRORS.items() if k in (401, 404)},
        },
    )
    def manifest() -> Response:
        fx = _need_fixtures()
        fx.refresh()
        return Response(
            fx.manifest_bytes, media_type="application/json", headers={"ETag": f'"{fx.manifest_sha256}"'}
        )

    @app.get(
        "/api/v1/fixtures/files/{path:path}",
        dependencies=auth,
        tags=["fixtures"],
        response_class=FileResponse,
        responses={
            200: {
                "content": {"application/octet-stream": {}, "application/zip": {}},
                "description": "the file (or a zip of a folder artifact)",
            },
            **_FILE_ERRORS,
        },
    )
    def fixture_file(path: str) -> FileResponse:
        served = _need_fixtures().resolve(path)
        headers = {"X-Parbench-Sha256": served.sha256}
        if served.archive:
            headers["X-Parbench-Archive"] = "zip"
        return FileResponse(
            served.path,
            media_type=served.media_type,
            headers=headers,
            filename=served.path.name if served.archive else None,
        )

    @app.put(
        "/api/v1/runs/{run_id}",
        dependencies=auth,
        response_model=RunSummary,
        status_code=201,
        tags=["runs"],
        responses={200: {"model": RunSummary, "description": "already stored, same content"}, **_ERRORS},
    )
    def put_run(run_id: RunId, body: RunIn, response: Response) -> dict[str, Any]:
        created = store.put_run({"run_id": run_id, **body.model_dump()})
        response.status_code = 201 if created else 200
        run = store.get_run(run_id)
        assert run is not None
        return run

    @app.post(
        "/api/v1/runs/{run_id}/results",
        dependencies=auth,
        response_model=StoredCounts,
        tags=["runs"],
        responses=_ERRORS,
    )
    def post_results(run_id: RunId, body: ResultsIn) -> StoredCounts:
        if fixtures is not None:
            fixtures.refresh()
            for i, r in enumerate(body.results):
                problem = fixtures.check_result(r.model, r.variant, r.size, r.case)
                if problem:
                    loc = ["body", "results", i]
                    reason = f"results[{i}]: {problem}"
                    return JSONResponse(  # type: ignore[return-value]
                        _error_body(
                            422, reason, errors=[{"loc": loc, "msg": problem, "type": "unknown_fixture"}]
                        ),
                        status_code=422,
                    )
        stored, duplicates = store.put_results(run_id, [r.model_dump() for r in body.results])
        return StoredCounts(stored=stored, duplicates=duplicates)

    @app.post(
        "/api/v1/runs/{run_id}/complete",
        dependencies=auth,
        response_model=RunSummary,
        tags=["runs"],
        responses=_ERRORS,
    )
    def complete(run_id: RunId, body: CompleteIn | None = None) -> dict[str, Any]:
        body = body or CompleteIn()
        return store.complete_run(run_id, body.status, body.message, body.expected_results)

    @app.get("/api/v1/runs", dependencies=auth, response_model=RunList, tags=["runs"], responses=_ERRORS)
    def list_runs(query: Annotated[RunsQuery, Query()]) -> dict[str, Any]:
        total, runs = store.list_runs(source=query.source, limit=query.limit, offset=query.offset)
        return {"total": total, "runs": runs}

    @app.get(
        "/api/v1/runs/{run_id}",
        dependencies=auth,
        response_model=RunWithResults,
        tags=["runs"],
        responses=_ERRORS,
    )
    def get_run(run_id: RunId) -> dict[str, Any]:
        run = store.get_run(run_id)
        if run is None:
            raise StarletteHTTPException(404, f"run {run_id} does not exist")
        return {"run": run, "results": store.run_results(run_id)}

    return app
