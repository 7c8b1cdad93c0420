"""Property test of the collector over its free-form fields (issue 15): whatever a client puts in
machine, fixture_set, device/runtime extras, xctest, extra and created_utc, the collector never
answers 5xx, every accepted body reads back through the API unchanged, and afterwards `GET /runs`,
`parbench report --store` and `parbench history` still work on the store."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.collector_helpers import AUTH, TOKEN, device_run, make_result
from support.collector_strategies import DEEP_JSON, FREE_JSON, ODD_DATES, same_json

from parbench.cli.regress import history_command
from parbench.collector.app import create_app
from parbench.history.store import Store
from parbench.report.build import build_report

MAX_EXAMPLES = 40
JSON = {**AUTH, "Content-Type": "application/json"}


def _body(obj: Any) -> bytes:
    """As a careless client would send it: NaN/Infinity tokens, surrogates as \\ud800 escapes."""
    return json.dumps(obj, allow_nan=True).encode()


def test_free_form_fields_never_poison_the_store(tmp_path: Path) -> None:
    store_path = tmp_path / "props.sqlite"
    ids = itertools.count()
    accepted = {"runs": 0, "results": 0}

    with TestClient(create_app(store_path, TOKEN), raise_server_exceptions=False) as c:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            created=ODD_DATES,
            machine=st.one_of(FREE_JSON, DEEP_JSON),
            fixture_set=FREE_JSON,
            device_extra=FREE_JSON,
            runtime_extra=FREE_JSON,
            xctest=st.one_of(FREE_JSON, DEEP_JSON),
            extra=FREE_JSON,
        )
        def post(created, machine, fixture_set, device_extra, runtime_extra, xctest, extra) -> None:
            run_id = f"prop-run-{next(ids):05d}"
            run = device_run(run_id)
            run.update(created_utc=created, machine=machine, fixture_set=fixture_set)
            run["device"] = {**device_extra, **run["device"]}
            run["runtime"] = {**runtime_extra, **run["runtime"]}
            r = c.put(f"/api/v1/runs/{run_id}", content=_body(run), headers=JSON)
            assert r.status_code in (201, 413, 422), r.text
            if r.status_code != 201:
                assert c.get(f"/api/v1/runs/{run_id}", headers=AUTH).status_code == 404
                run = device_run(run_id)
                assert c.put(f"/api/v1/runs/{run_id}", json=run, headers=AUTH).status_code == 201
            else:
                accepted["runs"] += 1
            stored = c.get(f"/api/v1/runs/{run_id}", headers=AUTH)
            assert stored.status_code == 200, stored.text
            for key in ("created_utc", "machine", "fixture_set", "device", "runtime"):
                assert same_json(run[key], stored.json()["run"][key]), key

            result = make_result(0, xctest=xctest, extra=extra)
            r = c.post(f"/api/v1/runs/{run_id}/results", content=_body({"results": [result]}), headers=JSON)
            assert r.status_code in (200, 413, 422), r.text
            back = c.get(f"/api/v1/runs/{run_id}", headers=AUTH)
            assert back.status_code == 200, back.text
            if r.status_code == 200:
                accepted["results"] += 1
                (got,) = back.json()["results"]
                assert same_json(xctest, got["xctest"]) and same_json(extra, got["extra"])
            else:
                assert back.json()["results"] == []
            assert c.get("/api/v1/runs", headers=AUTH, params={"limit": 1000}).status_code == 200

        post()

    # some generated bodies were accepted, so the readers below read more than the happy path
    assert accepted["runs"] > 0 and accepted["results"] > 0, accepted
    with Store(store_path) as store:
        assert len(store.runs()) == MAX_EXAMPLES
        assert len(store.results()) == accepted["results"]
    build_report([], tmp_path / "report", reports_dir=tmp_path / "none", store=store_path)
    result = CliRunner().invoke(
        history_command,
        ["tiny_net", "--store", str(store_path), "--source", "device", "--out", str(tmp_path / "hist")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
