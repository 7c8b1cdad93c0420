"""Where did a form first depart from eager?  Layer by layer, for every form.

``localise(module, variant, source, inputs)`` records the eager layers (:mod:`.layers`), reads the
form's value for each layer it can carry (:mod:`.intermediates`) and compares them
(:mod:`.layer_report`).  ``localise_model`` does it for a model the harness serves (its module,
fixture inputs, cached artifact and the request that made it); ``localise_failure`` is what the
parity suite runs on a failing case: it names the first diverging layer in the failure's message
and fills the record's ``first_divergence``, within a time budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from parbench.backends import get_backend
from parbench.backends.base import Artifact, Backend, ExportRequest
from parbench.diagnose.intermediates import (
    NEEDS_REQUEST,
    SUPPORTED,
    LocaliseError,
    _tensors,
    check_supported,
    form_run,
)
from parbench.diagnose.layer_report import LayerReport, compare_layers, layer_thresholds
from parbench.diagnose.layers import record_eager
from parbench.records.parity import FirstDivergence
from parbench.run.harness import Harness
from parbench.run.parity import ParityOutcome

__all__ = [
    "DEFAULT_BUDGET_S",
    "LocaliseError",
    "LocalisePolicy",
    "LocaliseTimeout",
    "localise",
    "localise_failure",
    "localise_model",
]

# Per failing case.  Localising a form rebuilt from its request (int8, ExecuTorch) costs about one
# more export of it; the default covers that for every default-tier model at its example size
# (docs/diagnose.md has the measured times), and a case predicted to take longer is not started.
DEFAULT_BUDGET_S = 300.0
# a rebuilt form's localisation against its recorded export time (tapped lowering, logging, metrics)
REBUILD_FACTOR = 1.5


class LocaliseTimeout(LocaliseError):
    """The time budget would be or was exceeded; the message names the stage and what to do."""


def localise(
    module: nn.Module,
    variant: str,
    source: Artifact | ExportRequest,
    inputs: Mapping[str, np.ndarray],
    thresholds: Mapping[str, float] | None = None,
    *,
    artifact: Artifact | None = None,
    backend: Backend | None = None,
    model: str = "",
    size: int | None = None,
    budget_s: float | None = None,
    max_taps: int | None = None,
    tolerances: Mapping[str, Mapping[str, float]] | None = None,
) -> LayerReport:
    """Compare ``module`` (eager fp32, the reference) with a deployment form of it, layer by layer.

    ``source``: the form's artifact, or the ExportRequest it is made from (the int8 and ExecuTorch
    forms are rebuilt from the request: pass the shipped artifact as ``artifact=`` to check the
    rebuild against it).  ``backend``: the form with its options (default: the registered one).
    ``inputs``: ``{input name: array}`` in the model's argument order.  ``thresholds``: ``snr_db``,
    ``cosine``, ``ch_snr_db``; default from the family's policy with the model's ``tolerances``.
    ``budget_s``: LocaliseTimeout when a stage would start past it (a stage in progress is not
    interrupted).
    """
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    if not isinstance(inputs, Mapping) or not inputs:
        raise LocaliseError("inputs must be a non-empty {input name: numpy array} mapping, in argument order")
    backend = backend or get_backend(variant)
    family = backend.family
    limits = dict(layer_thresholds(family, tolerances, variant))
    if thresholds:
        unknown = set(thresholds) - set(limits)
        if unknown:
            raise LocaliseError(f"unknown threshold(s) {sorted(unknown)}; known: {sorted(limits)}")
        limits.update(thresholds)

    def check_budget(stage: str) -> None:
        elapsed = time.perf_counter() - t_start
        if budget_s is not None and elapsed > budget_s:
            raise LocaliseTimeout(
                f"localisation ran out of its {budget_s:.0f} s budget {stage} ({elapsed:.0f} s spent); "
                "raise the budget or localise at a smaller size"
            )

    check_budget("before starting")
    module = module.eval()
    t0 = time.perf_counter()
    eager = record_eager(module, _tensors(inputs))
    seconds["eager"] = time.perf_counter() - t0
    check_budget(f"before reading {variant}'s intermediates")
    t0 = time.perf_counter()
    with torch.no_grad():
        run = form_run(
            variant, eager, module, source, inputs, backend=backend, artifact=artifact, max_taps=max_taps
        )
    seconds["form"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = compare_layers(eager, run, limits)
    seconds["compare"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    notes = list(run.notes)
    if eager.skipped:
        notes.append(
            f"{len(eager.skipped)} module(s) are not layers here (a container returning a child's output, "
            "a non-tensor output, or called more than once)"
        )
    return LayerReport(
        model=model or type(module).__name__,
        variant=variant,
        family=family,
        size=size,
        table=table,
        thresholds=limits,
        identity_source=run.map.source,
        tool=run.tool,
        graph_id=run.graph_id,
        names={path: run.names.get(key, key) for path, key in run.map.where.items()},
        notes=notes,
        seconds={**seconds, **{f"form.{k}": v for k, v in run.seconds.items()}},
        artifact_check=run.artifact_check,
        extra=run.map.extra,
    )


def request_for(h: Harness, model: str, variant: str, artifact: Artifact) -> ExportRequest:
    """The ExportRequest a cached artifact was made from, as the harness builds it: at the model's
    example size for all sizes, or at the artifact's own size when it serves one size."""
    spec = h.spec(model)
    per_size = artifact.sizes is not None and artifact.meta.get("shape_mode") == "per_size"
    export_size = artifact.sizes[0] if per_size and artifact.sizes else spec.example_size
    return h.export_request(model, variant, export_size, per_size)


def localise_model(
    h: Harness, model: str, variant: str, size: int, case: int = 0, **kwargs: Any
) -> LayerReport:
    """``localise`` on a model the harness serves: its module, fixture inputs, cached artifact (the
    one the parity suite runs), the form with the model's options, and the request that made it."""
    art = h.artifact(model, variant, size)
    if variant in NEEDS_REQUEST:
        source: Artifact | ExportRequest = request_for(h, model, variant, art)
        kwargs.setdefault("artifact", art)
    else:
        source = art
    return localise(
        h.module(model),
        variant,
        source,
        h.inputs(model, size, case),
        backend=h.backend(model, variant),
        model=model,
        size=size,
        tolerances=h.spec(model).tolerances,
        **kwargs,
    )


def bisect_command_line(model: str, variant: str, size: int) -> str:
    return f"parbench bisect {model} --variant {variant} --size {size}"


def predicted_seconds(variant: str, artifact: Artifact) -> float:
    """What localising this form is expected to cost before it starts: a rebuilt form costs about
    one more export of it (its export time is recorded in the artifact's meta); a form read from
    its file costs a few runs of it, not predicted."""
    if variant not in NEEDS_REQUEST:
        return 0.0
    return REBUILD_FACTOR * float(artifact.meta.get("export_seconds") or 0.0)


def localise_failure(h: Harness, outcome: ParityOutcome, budget_s: float | None = DEFAULT_BUDGET_S) -> None:
    """Name the first layer where a failing case's form departs from eager: ``first_divergence`` on
    the record and a few lines in its message.  The verdict stands whatever happens here; when the
    localisation cannot run, or would not fit ``budget_s``, the record says why and which command
    does it without a budget."""
    record, art, case = outcome.record, outcome.artifact, outcome.failed_case
    if art is None or case is None:
        return
    if art.format == "aimodel":  # op by op on the Core AI runtime (its own intermediate logger)
        from parbench.diagnose.coreai_intermediates import annotate

        annotate(record, h.module(record.model), art, case.inputs)
        return
    command = bisect_command_line(record.model, record.variant, record.size)
    if record.variant not in SUPPORTED:
        _not_run(
            record,
            f"{record.variant} has no per-layer values to read; localisation supports {', '.join(SUPPORTED)}",
            case.id,
        )
        return
    predicted = predicted_seconds(record.variant, art)
    if budget_s is not None and predicted > budget_s:
        _not_run(
            record,
            f"not started: rebuilding the program takes about {predicted:.0f} s (its export took "
            f"{art.meta.get('export_seconds', 0):.0f} s), over the {budget_s:.0f} s budget; run `{command}` "
            "or raise --localise-budget",
            case.id,
        )
        return
    cached = _cache_path(h, art, record.variant, case.id)
    if (fd := _read_cached(cached)) is not None:
        record.first_divergence = fd
        record.message += "\n" + divergence_text(fd, command) + " (the cached result for this artifact)"
        return
    try:
        rep = localise_model(
            h, record.model, record.variant, record.size, _case_index(h, outcome), budget_s=budget_s
        )
    except LocaliseTimeout as exc:
        _not_run(record, f"{exc}; run `{command}`", case.id)
        return
    except Exception as exc:  # the verdict stands; say why there is no localisation
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        _not_run(record, f"could not run: {type(exc).__name__}: {first}", case.id)
        return
    fd = rep.first_divergence(case.id)
    record.first_divergence = fd
    record.message += "\n" + divergence_text(fd, command)
    _write_cached(cached, fd)


# A localisation depends on the artifact (whose cache folder is named by everything it was made
# from), the failing case's inputs and this package's code; keyed by all three, a warm run reuses it.
def _code_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _cache_path(h: Harness, art: Artifact, variant: str, case_id: str) -> Path:
    key = json.dumps([str(art.path.resolve()), art.meta.get("sha256", ""), variant, case_id, _code_digest()])
    return h.cache_dir / "localise" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _read_cached(path: Path) -> FirstDivergence | None:
    try:
        return FirstDivergence.model_validate_json(path.read_text())
    except (OSError, ValueError):  # absent, or unreadable: localise again (and rewrite it)
        return None


def _write_cached(path: Path, fd: FirstDivergence) -> None:
    if fd.status == "not_run":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{time.monotonic_ns()}")
    tmp.write_text(fd.model_dump_json())
    tmp.replace(path)


def _case_index(h: Harness, outcome: ParityOutcome) -> int:
    ids = [c.id for c in h.cases(outcome.record.model, outcome.record.size)]
    return ids.index(outcome.failed_case.id) if outcome.failed_case and outcome.failed_case.id in ids else 0


def _not_run(record: Any, reason: str, case: str) -> None:
    record.first_divergence = FirstDivergence(status="not_run", reason=reason, case=case, size=record.size)
    record.message += f"\nfirst diverging layer: localisation {reason}"


def divergence_text(fd: FirstDivergence, command: str = "") -> str:
    """A localisation's summary as lines for a failure message."""
    where = f" ({command})" if command else ""
    if fd.status == "not_run":
        return f"first diverging layer: localisation {fd.reason}"
    if fd.status == "none":
        return (
            f"first diverging layer: none{where}: {fd.compared} of {fd.layers} layers compared, {fd.reason}; "
            "what fails is the task metric alone"
        )
    fused = f" [computed with {', '.join(fd.fused_with)}]" if fd.fused_with else ""
    if fd.how == "compared":
        values = (
            f"SNR {_db(fd.snr_db)}, cosine {fd.cosine:.5f}, channel SNR {_db(fd.ch_snr_db)}, "
            f"introduced {_change(fd.introduced_db)} ({fd.reason})"
            if fd.cosine is not None
            else fd.reason
        )
    else:
        values = f"{fd.how}: {fd.reason}"
    lines = [f"first diverging layer{where}: {fd.layer} ({fd.kind}){fused}: {values}"]
    if len(fd.flagged) > 1:
        lines.append("  next flagged: " + ", ".join(fd.flagged[1:]))
    if fd.onset:
        lines.append("  " + fd.onset)
    if fd.largest_drop:
        lines.append(f"  largest error introduced by one layer: {fd.largest_drop}")
    lines.append(f"  {fd.compared} of {fd.layers} layers compared ({fd.identity}); {fd.seconds:.0f} s")
    return "\n".join(lines)


def _db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} dB"


def _change(loss: float | None) -> str:
    """An introduced error (SNR lost against the layer's inputs) as the SNR change it is."""
    return "n/a" if loss is None else f"{-loss:+.1f} dB"


@dataclasses.dataclass
class LocalisePolicy:
    """Which failing cases of a parity run get localised, and within what budget.

    ``mode``: ``failures`` (unexpected failures: the default), ``all`` (declared known failures
    too), ``off``.  A model x variant is localised once per run (per worker): a later failing size
    of it points at the case that was localised."""

    mode: str = "failures"
    budget_s: float | None = DEFAULT_BUDGET_S
    done: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def wants(self, outcome: ParityOutcome) -> bool:
        if outcome.failed_case is None or self.mode == "off":
            return False
        return outcome.record.verdict == "fail" or (self.mode == "all" and outcome.record.verdict == "xfail")

    def apply(self, h: Harness, outcome: ParityOutcome) -> None:
        if not self.wants(outcome):
            return
        r = outcome.record
        key = (r.model, r.variant)
        if key in self.done:
            r.first_divergence = FirstDivergence(
                status="not_run",
                reason=f"localised once per model and form: see {self.done[key]}",
                same_as=self.done[key],
                size=r.size,
            )
            r.message += f"\nfirst diverging layer: see {self.done[key]} (localised once per model and form)"
            return
        self.done[key] = r.id
        localise_failure(h, outcome, self.budget_s)


@dataclasses.dataclass
class BisectOutcome:
    report: LayerReport
    verdict: str  # the case's parity verdict, in one or two lines
    case: str
    artifact: str
    fp16_text: str = ""  # Core ML fp16 forms: the same program at fp32 vs fp16 compute, op by op


def with_options(h: Harness, model: str, variant: str, **options: Any) -> Harness:
    """A harness over the same cache whose ``model`` uses ``options`` for ``variant`` (merged over
    the model's own options for it)."""
    spec = h.spec(model)
    merged = {**spec.options.get(variant, {}), **options}
    changed = dataclasses.replace(spec, options={**spec.options, variant: merged})
    return Harness(cache_dir=h.cache_dir, log=h.log, registry={**h.registry, model: changed})


def bisect_case(
    h: Harness,
    model: str,
    variant: str,
    size: int,
    case: int = 0,
    *,
    keep_fp32: tuple[str, ...] = (),
    thresholds: Mapping[str, float] | None = None,
    budget_s: float | None = None,
) -> BisectOutcome:
    """What ``parbench bisect`` shows: the case's verdict (as the parity suite judges it) and the
    localisation of that case; ``keep_fp32`` exports the int8 form with those modules left in fp32."""
    from parbench.run.parity import check

    check_supported(variant)
    if keep_fp32:
        h = with_options(h, model, variant, keep_fp32=tuple(keep_fp32))
    h.backend(model, variant)  # a bad option is a ConfigError naming the model and form, before exporting
    cases = h.cases(model, size)
    if not 0 <= case < len(cases):
        raise LocaliseError(
            f"case {case}: {model} has {len(cases)} fixture cases at {size} px (0..{len(cases) - 1})"
        )
    r = check(h, model, variant, size).record
    if r.verdict in ("skip", "error"):
        raise LocaliseError(f"{model} {variant} at {size} px: {r.verdict}: {r.message}")
    verdict = f"verdict: {r.verdict} ({r.message.splitlines()[0] if r.message else ''})"
    if r.verdict == "fail":
        verdict += "\n" + "\n".join(line for line in r.message.splitlines()[1:] if line.strip())
    rep = localise_model(h, model, variant, size, case, thresholds=thresholds, budget_s=budget_s)
    fp16 = ""
    if variant == "coreml_fp16":
        fp16 = _fp16_section(h, model, size, case, rep.thresholds)
    art = h.artifact(model, variant, size)
    return BisectOutcome(rep, verdict, cases[case].id, str(art.path), fp16)


def _fp16_section(h: Harness, model: str, size: int, case: int, limits: Mapping[str, float]) -> str:
    """The Core ML program run at fp32 against fp16 compute, op by op (``diagnose.bisect``)."""
    from parbench.diagnose.bisect import bisect
    from parbench.zoo.outputs import TorchOutputFlattening

    art = h.artifact(model, "coreml_fp16", size)
    found = bisect(
        TorchOutputFlattening(h.module(model)).eval(),
        art.path,
        h.inputs(model, size, case),
        threshold_snr=limits["snr_db"],
        threshold_cos=limits["cosine"],
    )
    only = dataclasses.replace(found, table=found.table[found.table.comparison == "fp32_vs_fp16"], notes=[])
    text = only.render()
    return "\n".join(line for line in text.splitlines() if not line.startswith("eager PyTorch vs Core ML"))
