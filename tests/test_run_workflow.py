"""scripts/run_workflow.py: a workflow job run step by step on this machine (expressions, step
conditions, outputs, continue-on-error, matrix entries), and the project's own nightly.yml read
by it."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("run_workflow", REPO / "scripts" / "run_workflow.py")
run_workflow = importlib.util.module_from_spec(spec)
sys.modules["run_workflow"] = run_workflow
spec.loader.exec_module(run_workflow)


def _workflow(tmp_path: Path, steps: str, extra: str = "") -> Path:
    path = tmp_path / "wf.yml"
    path.write_text(
        textwrap.dedent(
            """\
            name: t
            env:
              GREETING: "hello"
            jobs:
              main:
                runs-on: ubuntu-latest
            """
        )
        + textwrap.indent(textwrap.dedent(extra), "    ")
        + "    steps:\n"
        + textwrap.indent(textwrap.dedent(steps), "      ")
    )
    return path


def _invoke(*args: str):
    return CliRunner().invoke(run_workflow.main, list(args), catch_exceptions=False)


def test_steps_run_in_order_with_outputs_conditions_and_continue_on_error(tmp_path):
    trace = tmp_path / "trace.txt"
    wf = _workflow(
        tmp_path,
        f"""\
        - uses: actions/checkout@v4
        - name: say ${{{{ env.GREETING }}}}
          id: first
          run: |
            echo "$GREETING ${{{{ github.run_id }}}}" >> {trace}
            echo "status=1" >> "$GITHUB_OUTPUT"
        - name: tolerated failure
          continue-on-error: true
          run: exit 3
        - name: on status 1
          if: steps.first.outputs.status != '0'
          run: echo "status was ${{{{ steps.first.outputs.status }}}}" >> {trace}
        - name: on status 0
          if: steps.first.outputs.status == '0'
          run: echo never >> {trace}
        - name: real failure
          run: exit 4
        - name: skipped after the failure
          run: echo never >> {trace}
        - name: always
          if: always()
          run: echo always >> {trace}
        """,
    )
    result = _invoke(
        "--workflow", str(wf), "--job", "main", "--run-id", "42", "--log-dir", str(tmp_path / "log")
    )
    assert result.exit_code == 1, result.output
    assert trace.read_text().splitlines() == ["hello 42", "status was 1", "always"]
    steps = json.loads((tmp_path / "log" / "steps.json").read_text())
    assert [(s["name"], s["outcome"]) for s in steps] == [
        ("actions/checkout@v4", "skipped"),
        ("say hello", "success"),
        ("tolerated failure", "failure"),
        ("on status 1", "success"),
        ("on status 0", "skipped"),
        ("real failure", "failure"),
        ("skipped after the failure", "skipped"),
        ("always", "success"),
    ]
    assert steps[2]["why"] == "continue-on-error" and steps[5]["returncode"] == 4
    assert "job main: failed" in result.output


def test_a_pipeline_failure_fails_the_step_as_on_actions(tmp_path):
    wf = _workflow(tmp_path, "- run: false | cat\n")
    result = _invoke("--workflow", str(wf), "--job", "main", "--log-dir", str(tmp_path / "log"))
    assert result.exit_code == 1, result.output


def test_env_override_and_replace_rewrite_the_commands(tmp_path):
    out = tmp_path / "out.txt"
    wf = _workflow(tmp_path, f'- run: echo "$GREETING --tier default" > {out}\n')
    result = _invoke(
        "--workflow", str(wf), "--job", "main", "--env", "GREETING=hi",
        "--replace", "--tier default=--tier smoke", "--log-dir", str(tmp_path / "log"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_text() == "hi --tier smoke\n"


def test_a_steps_env_is_set_and_the_token_and_variables_come_from_this_machine(tmp_path, monkeypatch):
    out = tmp_path / "env.txt"
    wf = _workflow(
        tmp_path,
        f"""\
        - env:
            TOKEN_SEEN: ${{{{ github.token }}}}
            PLACE: "${{{{ env.GREETING }}}} there"
            TIER: ${{{{ vars.PARBENCH_TEST_TIER }}}}
          run: echo "$TOKEN_SEEN|$PLACE|$TIER" >> {out}
        - run: echo "${{TOKEN_SEEN:-unset}}" >> {out}
        """,
    )
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GH_TOKEN", "machine-token")
    monkeypatch.setenv("PARBENCH_TEST_TIER", "smoke")
    result = _invoke("--workflow", str(wf), "--job", "main", "--log-dir", str(tmp_path / "log"))
    assert result.exit_code == 0, result.output
    # the step's env is its own: the next step does not see it
    assert out.read_text() == "machine-token|hello there|smoke\nunset\n"
    monkeypatch.delenv("GH_TOKEN")
    monkeypatch.delenv("PARBENCH_TEST_TIER")
    out.unlink()
    assert _invoke("--workflow", str(wf), "--job", "main", "--log-dir", str(tmp_path / "log")).exit_code == 0
    assert out.read_text() == "|hello there|\nunset\n"


def test_matrix_entry_is_required_and_substituted(tmp_path):
    out = tmp_path / "m.txt"
    extra = """\
        strategy:
          matrix:
            include:
              - { model: a, size: 64 }
              - { model: b, size: 256 }
        env:
          STORE: reports/i-${{ matrix.model }}.sqlite
        """
    wf = _workflow(tmp_path, f'- run: echo "$STORE ${{{{ matrix.size }}}}" > {out}\n', extra)
    missing = CliRunner().invoke(run_workflow.main, ["--workflow", str(wf), "--job", "main"])
    assert missing.exit_code == 2
    assert "model=a,size=64; model=b,size=256" in missing.output
    result = _invoke(
        "--workflow",
        str(wf),
        "--job",
        "main",
        "--matrix",
        "model=b,size=256",
        "--log-dir",
        str(tmp_path / "l"),
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == "reports/i-b.sqlite 256\n"


def test_expressions_it_cannot_evaluate_and_unknown_jobs_are_refused(tmp_path):
    wf = _workflow(tmp_path, "- run: echo ${{ hashFiles('x') }}\n")
    result = CliRunner().invoke(
        run_workflow.main, ["--workflow", str(wf), "--job", "main", "--log-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "cannot evaluate ${{ hashFiles('x') }}" in result.output
    unknown_job = CliRunner().invoke(run_workflow.main, ["--workflow", str(wf), "--job", "nope"])
    assert unknown_job.exit_code == 2 and "its jobs: main" in unknown_job.output


def test_read_outputs_understands_both_forms(tmp_path):
    f = tmp_path / "o"
    f.write_text("a=1\nb<<EOF\nline 1\nline=2\nEOF\nc=x=y\n")
    assert run_workflow.read_outputs(f) == {"a": "1", "b": "line 1\nline=2", "c": "x=y"}


@pytest.mark.parametrize(
    ("job", "matrix", "expected"),
    [
        (
            "nightly",
            "",
            [
                "--tier smoke --threads 1 --runs auto --budget",
                "pytest parity/ --tier smoke",
                'parbench device fetch --artifact device-results --within 24 --out "$DEVICE_RESULTS"',
            ],
        ),
        ("instructions", "model=animegan,size=64", ["--models animegan --sizes 64", "--instructions"]),
    ],
)
def test_the_projects_nightly_reads_and_every_expression_is_resolved(tmp_path, job, matrix, expected):
    args = ["--job", job, "--dry-run", "--log-dir", str(tmp_path), "--replace", "--tier default=--tier smoke"]
    result = _invoke(*args, *(["--matrix", matrix] if matrix else []))
    assert result.exit_code == 0, result.output
    assert "${{" not in result.output
    for text in expected:
        assert text in result.output


def test_the_device_workflow_reads_and_every_expression_is_resolved(tmp_path, monkeypatch):
    """The lab Mac's job as a cron job on the Mac would run it: every expression resolves (the
    repository variables from the environment) and the commands are the ones the nightly expects."""
    wf = REPO / ".github/workflows/device.yml"
    monkeypatch.setenv("PARBENCH_DEVICE_TIER", "default")
    dry = _invoke("--workflow", str(wf), "--job", "device", "--dry-run", "--log-dir", str(tmp_path))
    assert dry.exit_code == 0, dry.output
    assert "${{" not in dry.output
    assert "env: PARBENCH_UDID, PARBENCH_TEAM, DEVICE_TIER, LAUNCHES\n" in dry.output
    assert '--tier "${DEVICE_TIER:-smoke}"' in dry.output
    assert '--run-id "nightly-' in dry.output and '-$launch"' in dry.output
    assert 'parbench device export --store "$STORE" --since-hours 24 --out "$RESULTS"' in dry.output
    assert "upload-artifact" in dry.output
