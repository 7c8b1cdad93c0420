"""Run one job of a GitHub Actions workflow on this machine, step by step, and time every step.

\b
    .venv/bin/python scripts/run_workflow.py --job nightly
    .venv/bin/python scripts/run_workflow.py --job nightly --env BUDGET=5 --replace '--tier default=--tier smoke'
    .venv/bin/python scripts/run_workflow.py --job instructions --matrix model=mobilenet_v2,size=256
    .venv/bin/python scripts/run_workflow.py --job nightly --dry-run     # print the commands only

This is the nightly without GitHub (a cron job, a lab machine, a dry run before a change to the
workflow lands). It runs the job's ``run:`` steps exactly as written, with bash as Actions runs
them (``bash --noprofile --norc -eo pipefail``), from the repository root:

* ``${{ github.run_id }}``, ``${{ env.X }}``, ``${{ matrix.X }}`` and ``${{ steps.ID.outputs.X }}``
  are substituted, ``${{ github.token }}`` by this machine's GH_TOKEN or GITHUB_TOKEN and
  ``${{ vars.X }}`` by its environment variable X (empty without them); a step's ``env:`` is set
  for its script (``--dry-run`` names its variables, not their values); ``GITHUB_OUTPUT`` and
  ``GITHUB_STEP_SUMMARY`` are files under ``--log-dir``;
* a step's ``if:`` may be ``always()``, ``success()``, ``failure()`` or a comparison of a step
  output with a quoted string; a step without one runs only while no step has failed;
  ``continue-on-error: true`` keeps a failure from failing the job;
* ``uses:`` steps (checkout, setup-python, caches, uploads) are GitHub's own actions: they are
  skipped and listed. The working tree is the checkout, the caches are whatever this machine
  holds (``.parbench-cache``, ``reports/``).

``--replace OLD=NEW`` rewrites the text of every ``run:`` block (e.g. to run the nightly on the
smoke tier); ``--env`` overrides the workflow's ``env:``. Prints each step's outcome and wall
time, writes them to ``--log-dir``/steps.json and exits 1 when the job failed, 2 on a workflow
this runner cannot read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

REPO = Path(__file__).resolve().parents[1]
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
OUTPUT_TEST = re.compile(r"^steps\.([\w-]+)\.outputs\.([\w-]+)\s*(==|!=)\s*'([^']*)'$")


class WorkflowError(click.ClickException):
    exit_code = 2


@dataclass
class StepResult:
    name: str
    outcome: str  # success | failure | skipped
    seconds: float = 0.0
    returncode: int | None = None
    why: str = ""


@dataclass
class JobState:
    run_id: str
    env: dict[str, str]
    matrix: dict[str, str]
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    failed: bool = False


def load_job(workflow: Path, job: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(workflow.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise WorkflowError(f"cannot read the workflow {workflow}: {exc}") from exc
    jobs = (document or {}).get("jobs") or {}
    if job not in jobs:
        raise WorkflowError(f"{workflow} has no job {job!r}; its jobs: {', '.join(jobs) or 'none'}")
    return jobs[job]


def choose_matrix(spec: dict[str, Any], given: dict[str, str], job: str) -> dict[str, str]:
    """The matrix entry to run: ``given`` must name one of the job's ``include`` entries."""
    include = ((spec.get("strategy") or {}).get("matrix") or {}).get("include") or []
    if not include:
        if given:
            raise WorkflowError(f"job {job!r} has no matrix, but --matrix was given")
        return {}
    entries = [{k: str(v) for k, v in entry.items()} for entry in include]
    for entry in entries:
        if entry == given:
            return entry
    listed = "; ".join(",".join(f"{k}={v}" for k, v in entry.items()) for entry in entries)
    raise WorkflowError(f"job {job!r} runs a matrix: pass --matrix with one of its entries ({listed})")


def substitute(text: str, state: JobState) -> str:
    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr == "github.run_id":
            return state.run_id
        if expr == "github.token":  # this machine's token, if it has one
            return os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN") or ""
        scope, _, name = expr.partition(".")
        if scope == "vars" and re.fullmatch(r"\w+", name):  # repository variables: this machine's environment
            return os.environ.get(name, "")
        if scope == "env" and name in state.env:
            return state.env[name]
        if scope == "matrix" and name in state.matrix:
            return state.matrix[name]
        step = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr)
        if step:
            return state.outputs.get(step.group(1), {}).get(step.group(2), "")
        raise WorkflowError(f"cannot evaluate ${{{{ {expr} }}}} outside GitHub Actions")

    return EXPRESSION.sub(value, text)


def should_run(condition: Any, state: JobState) -> bool:
    if condition is None:
        return not state.failed
    text = EXPRESSION.sub(lambda m: m.group(1), str(condition)).strip()
    if text == "always()":
        return True
    if text == "success()":
        return not state.failed
    if text == "failure()":
        return state.failed
    test = OUTPUT_TEST.match(text)
    if test:
        step_id, key, op, expected = test.groups()
        actual = state.outputs.get(step_id, {}).get(key, "")
        return (actual == expected) == (op == "==") and not state.failed
    raise WorkflowError(f"cannot evaluate the step condition {condition!r} outside GitHub Actions")


def read_outputs(path: Path) -> dict[str, str]:
    """``key=value`` lines and ``key<<DELIMITER`` blocks, as Actions reads GITHUB_OUTPUT."""
    outputs: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            block = []
            i += 1
            while i < len(lines) and lines[i] != delimiter:
                block.append(lines[i])
                i += 1
            outputs[key] = "\n".join(block)
        elif "=" in line:
            key, val = line.split("=", 1)
            outputs[key] = val
        i += 1
    return outputs


def step_name(step: dict[str, Any], state: JobState) -> str:
    if "name" in step:
        return substitute(str(step["name"]), state)
    if "uses" in step:
        return str(step["uses"])
    return str(step.get("run", "")).strip().splitlines()[0]


def run_job(
    spec: dict[str, Any],
    state: JobState,
    replacements: list[tuple[str, str]],
    log_dir: Path,
    dry_run: bool = False,
    echo=click.echo,
) -> list[StepResult]:
    log_dir.mkdir(parents=True, exist_ok=True)
    summary = log_dir / "step-summary.md"
    results: list[StepResult] = []
    for index, step in enumerate(spec.get("steps") or [], start=1):
        name = step_name(step, state)
        if "uses" in step:
            results.append(StepResult(name, "skipped", why=f"GitHub action {step['uses']}"))
            echo(f"[{index}] {name}: skipped (GitHub action {step['uses']})")
            continue
        if not dry_run and not should_run(step.get("if"), state):
            results.append(StepResult(name, "skipped", why=f"if: {step.get('if', 'success()')}"))
            echo(f"[{index}] {name}: skipped (if: {step.get('if', 'success()')})")
            continue
        script = substitute(str(step.get("run", "")), state)
        for old, new in replacements:
            script = script.replace(old, new)
        # the step's env: resolved in a dry run too, so an expression this runner cannot evaluate
        # fails there; a dry run names the variables without their values (a token among them)
        step_env = {str(k): substitute(str(v), state) for k, v in (step.get("env") or {}).items()}
        if dry_run:
            names = f"env: {', '.join(step_env)}\n" if step_env else ""
            echo(f"[{index}] {name}\n{names}{script}")
            results.append(StepResult(name, "skipped", why="dry run"))
            continue
        output = log_dir / f"output-{index}.txt"
        output.write_text("")
        env = {
            **os.environ,
            **state.env,
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_RUN_ID": state.run_id,
            "CI": "true",
            **step_env,
        }
        with tempfile.NamedTemporaryFile("w", suffix=".sh", dir=log_dir, delete=False) as handle:
            handle.write(script)
        echo(f"[{index}] {name}: running")
        start = time.monotonic()
        code = subprocess.call(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", handle.name],
            cwd=REPO / step.get("working-directory", "."),
            env=env,
        )
        seconds = time.monotonic() - start
        if "id" in step:
            state.outputs[str(step["id"])] = read_outputs(output)
        outcome = "success" if code == 0 else "failure"
        tolerated = code != 0 and bool(step.get("continue-on-error"))
        if code != 0 and not tolerated:
            state.failed = True
        why = "continue-on-error" if tolerated else ""
        results.append(StepResult(name, outcome, seconds, code, why))
        echo(f"[{index}] {name}: {outcome} (exit {code}) in {format_seconds(seconds)}")
    return results


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def parse_pairs(values: tuple[str, ...], what: str, separator: str = "=") -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, val = value.partition(separator)
        if not sep or not key:
            raise click.BadParameter(f"expected KEY{separator}VALUE, got {value!r}", param_hint=what)
        pairs.append((key, val))
    return pairs


@click.command(help=__doc__)
@click.option(
    "--workflow",
    type=click.Path(dir_okay=False, path_type=Path),
    default=REPO / ".github/workflows/nightly.yml",
    show_default=".github/workflows/nightly.yml",
)
@click.option("--job", required=True, help="The job to run (a key under jobs:).")
@click.option("--matrix", "matrix_text", default="", help="The matrix entry, e.g. model=animegan,size=64.")
@click.option("--env", "env_values", multiple=True, help="NAME=VALUE over the workflow's env (repeatable).")
@click.option("--replace", "replace_values", multiple=True, help="OLD=NEW in every run: block (repeatable).")
@click.option("--run-id", default=None, help="The value of ${{ github.run_id }} [default: the UTC time].")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/workflow"),
    show_default=True,
)
@click.option("--dry-run", is_flag=True, help="Print each step's commands, run nothing.")
def main(
    workflow: Path,
    job: str,
    matrix_text: str,
    env_values: tuple[str, ...],
    replace_values: tuple[str, ...],
    run_id: str | None,
    log_dir: Path,
    dry_run: bool,
) -> None:
    document_env = (yaml.safe_load(workflow.read_text()) or {}).get("env") or {} if workflow.exists() else {}
    spec = load_job(workflow, job)
    given = dict(parse_pairs(tuple(filter(None, matrix_text.split(","))), "--matrix"))
    state = JobState(
        run_id=run_id or time.strftime("%Y%m%d%H%M%S", time.gmtime()),
        env={},
        matrix=choose_matrix(spec, given, job),
    )
    for source in (document_env, spec.get("env") or {}):
        for key, val in source.items():
            state.env[str(key)] = substitute(str(val), state)
    state.env.update(parse_pairs(env_values, "--env"))
    replacements = parse_pairs(replace_values, "--replace")
    results = run_job(spec, state, replacements, log_dir, dry_run=dry_run)
    (log_dir / "steps.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    if dry_run:
        return
    click.echo("\n| step | outcome | wall |\n|---|---|---:|")
    for r in results:
        note = f" ({r.why})" if r.why else ""
        wall = format_seconds(r.seconds) if r.outcome != "skipped" else ""
        click.echo(f"| {r.name} | {r.outcome}{note} | {wall} |")
    total = sum(r.seconds for r in results)
    click.echo(
        f"\njob {job}: {'failed' if state.failed else 'succeeded'}; {format_seconds(total)} in run steps"
    )
    sys.exit(1 if state.failed else 0)


if __name__ == "__main__":
    main()
