"""The collector's endpoints (docs/collector-api.md).  Plain functions, run in the thread pool; the
store and the served fixture set come from the app's state through dependencies.  Bodies are the
record types of :mod:`parbench.records.device`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

import parbench
from parbench._util.clock import utc_now
from parbench.collector.fixtures_view import FixtureServeError, FixtureView
from parbench.collector.guard import API_PREFIX
from parbench.history.store import Store
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

API_VERSION = 1


class UnknownFixture(Exception):
    """A posted result names a model/variant/size/case the served fixture set does not know."""

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(f"results[{index}]: {problem}")
        self.index = index
        self.problem = problem


# -- dependencies ------------------------------------------------------------------------------


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_fixtures(request: Request) -> FixtureView | None:
    return request.app.state.fixtures


def need_fixtures(fixtures: Annotated[FixtureView | None, Depends(get_fixtures)]) -> FixtureView:
    if fixtures is None:
        raise FixtureServeError("this collector serves no fixture set (start it with --fixtures DIR)")
    return fixtures


_bearer = HTTPBearer(auto_error=False, description="the token printed by `parbench serve`")


def declare_auth(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Documents the bearer scheme in OpenAPI; the check itself is the guard's (collector.guard)."""


StoreDep = Annotated[Store, Depends(get_store)]
ServedOrNone = Annotated[FixtureView | None, Depends(get_fixtures)]
Served = Annotated[FixtureView, Depends(need_fixtures)]

# -- documented error answers ------------------------------------------------------------------

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

service = APIRouter(prefix=API_PREFIX, tags=["service"])
fixtures = APIRouter(prefix=f"{API_PREFIX}/fixtures", tags=["fixtures"], dependencies=[Depends(declare_auth)])
runs = APIRouter(
    prefix=f"{API_PREFIX}/runs", tags=["runs"], dependencies=[Depends(declare_auth)], responses=_ERRORS
)
ROUTERS = (service, fixtures, runs)

# -- service -----------------------------------------------------------------------------------


@service.get("/health", response_model=Health)
def health(request: Request, store: StoreDep, served: ServedOrNone) -> Health:
    return Health(
        limits=request.app.state.limits,
        status="ok",
        api_version=API_VERSION,
        parbench=parbench.__version__,
        store_schema_version=store.schema_version(),
        fixtures=served is not None,
        server_time_utc=utc_now(),
    )


# -- fixtures ----------------------------------------------------------------------------------


@fixtures.get(
    "/manifest",
    responses={
        200: {"content": {"application/json": {}}, "description": "manifest.json, byte for byte"},
        **{k: v for k, v in _ERRORS.items() if k in (401, 404)},
    },
)
def manifest(served: Served) -> Response:
    served.refresh()
    return Response(
        served.manifest_bytes, media_type="application/json", headers={"ETag": f'"{served.manifest_sha256}"'}
    )


@fixtures.get(
    "/files/{path:path}",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}, "application/zip": {}},
            "description": "the file (or a zip of a folder artifact)",
        },
        **_FILE_ERRORS,
    },
)
def fixture_file(path: str, served: Served) -> FileResponse:
    file = served.resolve(path)
    headers = {"X-Parbench-Sha256": file.sha256}
    if file.archive:
        headers["X-Parbench-Archive"] = "zip"
    return FileResponse(
        file.path,
        media_type=file.media_type,
        headers=headers,
        filename=file.path.name if file.archive else None,
    )


# -- runs --------------------------------------------------------------------------------------


@runs.put(
    "/{run_id}",
    response_model=RunSummary,
    status_code=201,
    responses={200: {"model": RunSummary, "description": "already stored, same content"}},
)
def put_run(run_id: RunId, body: RunIn, response: Response, store: StoreDep) -> dict[str, Any]:
    created = store.put_run({"run_id": run_id, **body.model_dump()})
    response.status_code = 201 if created else 200
    run = store.get_run(run_id)
    assert run is not None
    return run


@runs.post("/{run_id}/results", response_model=StoredCounts)
def post_results(run_id: RunId, body: ResultsIn, store: StoreDep, served: ServedOrNone) -> StoredCounts:
    if served is not None:
        served.refresh()
        for i, r in enumerate(body.results):
            problem = served.check_result(r.model, r.variant, r.size, r.case)
            if problem:
                raise UnknownFixture(i, problem)
    stored, duplicates = store.put_results(run_id, body.results)
    return StoredCounts(stored=stored, duplicates=duplicates)


@runs.post("/{run_id}/complete", response_model=RunSummary)
def complete(run_id: RunId, store: StoreDep, body: CompleteIn | None = None) -> dict[str, Any]:
    body = body or CompleteIn()
    return store.complete_run(run_id, body.status, body.message, body.expected_results)


@runs.get("", response_model=RunList)
def list_runs(query: Annotated[RunsQuery, Query()], store: StoreDep) -> dict[str, Any]:
    total, found = store.list_runs(source=query.source, limit=query.limit, offset=query.offset)
    return {"total": total, "runs": found}


@runs.get("/{run_id}", response_model=RunWithResults)
def get_run(run_id: RunId, store: StoreDep) -> dict[str, Any]:
    run = store.get_run(run_id)
    if run is None:
        raise HTTPException(404, f"run {run_id} does not exist")
    return {"run": run, "results": store.run_results(run_id)}
