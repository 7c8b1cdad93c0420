"""`parbench serve` start-up on a lab network (issue 15, defects 4 and 10): how the token is given,
checked and shown, and the server limits passed to uvicorn.  uvicorn.run is replaced so that nothing
listens; what it would have been called with is checked."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner
from fastapi.testclient import TestClient
from support.collector_helpers import TOKEN

from parbench.cli.serve import serve_command
from parbench.collector.app import create_app

STRONG = "lab-token-3b8e1f0c9d7a5e2f4b6c"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    called: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: Any) -> None:
        called.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.delenv("PARBENCH_COLLECTOR_TOKEN", raising=False)
    return called


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(
        serve_command, ["--store", str(tmp_path / "s.sqlite"), *args], env=env, catch_exceptions=False
    )


@pytest.mark.parametrize("how", ["option", "env", "file"])
def test_short_token_is_refused_off_loopback(tmp_path, served, how) -> None:
    (tmp_path / "tok").write_text("T\n")
    args = {"option": ["--token", "T"], "env": [], "file": ["--token-file", str(tmp_path / "tok")]}[how]
    env = {"PARBENCH_COLLECTOR_TOKEN": "T"} if how == "env" else None
    result = _serve(tmp_path, "--host", "0.0.0.0", *args, env=env)
    assert result.exit_code != 0 and not served
    assert "at least 16 characters" in result.output and "openssl rand -hex 16" in result.output


def test_short_token_is_allowed_on_loopback(tmp_path, served) -> None:
    result = _serve(tmp_path, "--token", "T")
    assert result.exit_code == 0, result.output
    assert served["host"] == "127.0.0.1"


def test_given_token_is_never_echoed(tmp_path, served) -> None:
    (tmp_path / "tok").write_text(STRONG + "\n")
    for args, env in (
        (["--token-file", str(tmp_path / "tok")], None),
        ([], {"PARBENCH_COLLECTOR_TOKEN": STRONG}),
        (["--token", STRONG], None),
    ):
        result = _serve(tmp_path, "--host", "0.0.0.0", *args, env=env)
        assert result.exit_code == 0, result.output
        assert STRONG not in result.output
        assert "token: given" in result.output


def test_token_on_the_command_line_gets_a_warning(tmp_path, served) -> None:
    result = _serve(tmp_path, "--token", STRONG)
    assert "visible to every local user" in result.output and "--token-file" in result.output


def test_generated_token_is_printed_once(tmp_path, served) -> None:
    result = _serve(tmp_path)
    assert result.exit_code == 0
    printed = result.output.split("token: ")[1].split()[0]
    assert len(printed) >= 32


def test_token_file_must_exist_and_hold_a_token(tmp_path, served) -> None:
    (tmp_path / "empty").write_text("\n")
    result = CliRunner().invoke(serve_command, ["--token-file", str(tmp_path / "empty")])
    assert result.exit_code != 0 and "empty" in result.output and not served


def test_uvicorn_gets_connection_limits(tmp_path, served) -> None:
    assert _serve(tmp_path, "--token", STRONG).exit_code == 0
    assert served["limit_concurrency"] >= 32
    assert 1 <= served["timeout_keep_alive"] <= 30


def test_failed_token_attempts_are_slowed_down(tmp_path) -> None:
    app = create_app(tmp_path / "s.sqlite", TOKEN)
    with TestClient(app) as c:
        start = time.monotonic()
        for _ in range(4):
            assert c.get("/api/v1/runs", headers={"Authorization": "Bearer guess"}).status_code == 401
        slow = time.monotonic() - start
        start = time.monotonic()
        assert c.get("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        fast = time.monotonic() - start
    assert slow >= 0.9
    assert fast < 0.5
