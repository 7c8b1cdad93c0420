"""Property-based fuzzing of the collector API from its own OpenAPI schema (schemathesis).

Schemathesis generates valid and invalid requests for every operation; the collector must never
answer 5xx, must answer with documented status codes and bodies, and must refuse what its
schema refuses.  The number of examples is bounded to keep the run short.

The app is built at import: schemathesis' lazy `from_fixture` loader does not work with pytest 9
(it sets `request.node._nodeid`, which pytest 9 no longer has)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from support.collector_helpers import AUTH, TOKEN, build_fixture_set, device_run, make_result
from support.collector_strategies import ODD_DATES

from parbench.collector.app import create_app

MAX_EXAMPLES = 40

_work = Path(tempfile.mkdtemp(prefix="parbench-fuzz-"))
atexit.register(shutil.rmtree, _work, ignore_errors=True)
# The default body limit (8 MiB): generated lists over maxItems must reach validation (422).
_app = create_app(
    _work / "fuzz.sqlite", TOKEN, fixtures_dir=build_fixture_set(_work / "set"), cache_dir=_work / "zips"
)
with TestClient(_app) as _c:  # a run with a result, so some generated requests get past "unknown run"
    _c.put("/api/v1/runs/fuzz-run-0001", json=device_run("fuzz-run-0001"), headers=AUTH).raise_for_status()
    _c.post(
        "/api/v1/runs/fuzz-run-0001/results", json={"results": [make_result(0)]}, headers=AUTH
    ).raise_for_status()

# created_utc and other date-times: valid RFC 3339 and the forms the store's readers cannot parse
schemathesis.openapi.format("date-time", ODD_DATES)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_never_fails_on_generated_requests(case) -> None:
    # Every check but "schema-valid data is accepted": part of what the collector refuses is not
    # expressible in OpenAPI (the run must exist, the model must be in the served manifest, a
    # successful result needs samples, a device run needs its device), and is refused with 4xx.
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])
