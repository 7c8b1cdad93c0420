"""The harness: models, fixtures, cached artifacts and sessions, and one parity verdict per
model x form x size.  The pytest plugin, the bench suite and the CLI all go through it.

Data flows one way: ModelSpec -> nn.Module -> (golden outputs, Backend.export -> Artifact) ->
Backend.load -> Session.run -> compare -> ParityResult.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import functools
import hashlib
import importlib.metadata
import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parbench import compare as cmp
from parbench import fixtures, zoo
from parbench.backends import get_backend
from parbench.backends.base import (
    Artifact,
    BackendUnavailable,
    ExportError,
    ExportRequest,
    NeedsPerSize,
    Session,
    TorchOutputFlattening,
)
from parbench.cache import ArtifactCache

CASES_PER_SIZE = 2
BISECT_VARIANTS = ("coreml_fp16", "coreml_fp32")  # tensor-input Core ML forms
SESSIONS_KEPT = 3


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for dist in ("parbench", "torchvision", "coremltools", "onnxruntime", "onnx", "executorch", "torchao", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


@dataclasses.dataclass
class ParityResult:
    model: str
    variant: str
    size: int
    task: str
    family: str
    verdict: str  # pass | fail | error | skip | xfail
    message: str
    executor: str = ""
    metrics: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    cases: list[str] = dataclasses.field(default_factory=list)
    export: dict[str, Any] = dataclasses.field(default_factory=dict)
    cache: str = ""
    versions: dict[str, str] = dataclasses.field(default_factory=versions)
    timestamp: str = dataclasses.field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def id(self) -> str:
        return f"{self.model}-{self.variant}-{self.size}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def headline(self) -> str:
        """The one number most telling for the task, for tables."""
        if not self.metrics:
            return ""
        first = next(iter(self.metrics.values()))
        for key in ("psnr_db", "pixel_accuracy", "top1_agree", "class_agree"):
            if key in first:
                return f"cos {first['cosine']:.5f} {key} {first[key]:.4g}"
        return f"cos {first['cosine']:.5f} snr {first['snr_db']:.1f}dB"


class Harness:
    def __init__(self, config_path: Path | str | None = None, cache_dir: Path | str = ".parbench-cache",
                 log: Callable[[str], None] | None = None):
        self.registry = zoo.registry(config_path)
        self.cache_dir = Path(cache_dir)
        self.cache = ArtifactCache(self.cache_dir)
        self.log = log or (lambda msg: None)
        self._modules: dict[str, torch.nn.Module] = {}
        self._digests: dict[str, str] = {}
        self._fixtures: dict[str, fixtures.FixtureSet] = {}
        self._sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self.cache_stats = {"hit": 0, "exported": 0}

    # ---- models and fixtures --------------------------------------------------------------
    def spec(self, name: str) -> zoo.ModelSpec:
        try:
            return self.registry[name]
        except KeyError:
            raise zoo.ConfigError(f"unknown model {name!r}; known: {', '.join(self.registry)}") from None

    def module(self, name: str) -> torch.nn.Module:
        if name not in self._modules:
            self._modules[name] = zoo.load_model(self.spec(name), self.cache_dir)
        return self._modules[name]

    def weights_digest(self, name: str) -> str:
        """sha256 over the module's state (names, shapes, dtypes, bytes): part of every cache key,
        so a changed architecture or weight never reuses an old artifact."""
        if name not in self._digests:
            h = hashlib.sha256()
            for key, tensor in self.module(name).state_dict().items():
                t = tensor.detach().cpu().contiguous()
                h.update(f"{key}:{t.dtype}:{list(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._digests[name] = h.hexdigest()
        return self._digests[name]

    def fixture_set(self, name: str) -> fixtures.FixtureSet:
        """The model's fixture set, built once into the cache (and rebuilt if corrupt)."""
        if name in self._fixtures:
            return self._fixtures[name]
        spec = self.spec(name)
        sizes = "_".join(map(str, spec.sizes))
        root = self.cache_dir / "fixtures" / f"{name}-{spec.spec_hash[:16]}-{sizes}-c{CASES_PER_SIZE}"
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(str(root) + ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                fs = fixtures.FixtureSet.open(root)
                for c in fs.model(name)["cases"]:  # verify every tensor now, not mid-run
                    for rel in [*c["inputs"].values(), *c["golden"].values()]:
                        fs.read_tensor(rel)
            except fixtures.FixtureError as exc:
                if (root / "manifest.json").exists():
                    self.log(f"rebuilding fixtures for {name}: {exc}")
                else:
                    self.log(f"building fixtures for {name} at {sizes.replace('_', ', ')} px")
                fs = fixtures.build(root, [spec], lambda s: self.module(s.name), CASES_PER_SIZE)
        self._fixtures[name] = fs
        return fs

    def cases(self, name: str, size: int) -> list[fixtures.Case]:
        cases = self.fixture_set(name).cases(name, size)
        if not cases:
            raise zoo.ConfigError(f"model {name!r} has no fixtures at size {size} (its sizes: "
                                  f"{list(self.spec(name).sizes)}); add the size to the model's 'sizes'")
        return cases

    def inputs(self, name: str, size: int, case: int = 0) -> OrderedDict[str, np.ndarray]:
        return self.cases(name, size)[case].inputs

    def output_names(self, name: str) -> list[str]:
        return list(self.fixture_set(name).model(name)["outputs"])

    # ---- artifacts and sessions -----------------------------------------------------------
    def skip_reason(self, name: str, variant: str, size: int) -> str | None:
        backend = get_backend(variant)
        applies_to = getattr(backend, "applies_to", None)  # optional: a form for some models only
        if applies_to is not None and (why := applies_to(self.spec(name))):
            return f"{variant} does not apply to {name}: {why}"
        avail = backend.available()
        if not avail.can_export:
            return f"{variant} cannot export here: {avail.reason}"
        return None

    def _export_fn(self, name: str, variant: str, export_size: int, per_size: bool) -> Callable[[Path], Artifact]:
        spec, backend = self.spec(name), get_backend(variant)

        def export(out: Path) -> Artifact:
            example = tuple(torch.from_numpy(v) for v in zoo.example_inputs(spec, export_size).values())
            req = ExportRequest(
                module=self.module(name), spec=spec, example_inputs=example, export_size=export_size,
                sizes=[export_size] if per_size else list(spec.sizes), per_size=per_size,
                calibration=zoo.calibration_inputs(spec, export_size) if backend.family == "int8" else (),
                output_names=self.output_names(name),
            )
            self.log(f"exporting {name} -> {variant}" + (f" at {export_size}px" if per_size else ""))
            art = backend.export(req, out)
            art.meta.setdefault("shape_mode", "per_size" if per_size else "any")
            return art

        return export

    def artifact(self, name: str, variant: str, size: int) -> Artifact:
        """The artifact that serves `size`: one exported at the example size when the form can
        serve every size from one file, else (or when that fails for this model) one per size."""
        spec, backend = self.spec(name), get_backend(variant)
        names = self.output_names(name)
        if variant == "eager":
            art = backend.export(ExportRequest(self.module(name), spec, (), size, spec.sizes, False), Path())
            art.meta["output_names"] = names
            return art
        base_key = {"spec": spec.identity(), "weights": self.weights_digest(name), "variant": variant,
                    "options": backend.options(), "inputs": [i.concrete(0) for i in spec.inputs]}
        fallback = ""
        if backend.shape_mode == "any":
            try:
                outcome = self.cache.get_or_export(
                    name, variant, "any", dict(base_key, example_size=spec.example_size, sizes=spec.sizes),
                    self._export_fn(name, variant, spec.example_size, per_size=False))
            except NeedsPerSize as exc:
                fallback = str(exc)
            else:
                return self._note(outcome, names)
        outcome = self.cache.get_or_export(
            name, variant, str(size), dict(base_key, example_size=size, per_size=True),
            self._export_fn(name, variant, size, per_size=True))
        if fallback:
            outcome.artifact.meta["per_size_reason"] = fallback
        return self._note(outcome, names)

    def _note(self, outcome: Any, names: list[str]) -> Artifact:
        key = "hit" if outcome.status == "hit" else "exported"
        self.cache_stats[key] += 1
        art = outcome.artifact
        art.meta["output_names"] = names
        art.meta["cache"] = outcome.status
        return art

    def session(self, name: str, variant: str, size: int) -> Session:
        art = self.artifact(name, variant, size)
        key = (name, variant, str(art.path))
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        sess = get_backend(variant).load(art)
        self._sessions[key] = sess
        while len(self._sessions) > SESSIONS_KEPT:
            self._sessions.popitem(last=False)
        return sess

    # ---- parity ---------------------------------------------------------------------------
    def parity(self, name: str, variant: str, size: int) -> ParityResult:
        spec, backend = self.spec(name), get_backend(variant)
        result = ParityResult(name, variant, size, spec.task, backend.family, "error", "")
        known = spec.known_failures.get(variant)
        if reason := self.skip_reason(name, variant, size):
            result.verdict, result.message = "skip", reason
            return result
        t0 = time.perf_counter()
        try:
            art = self.artifact(name, variant, size)
        except ExportError as exc:
            result.verdict = "xfail" if known else "error"
            result.message = f"{variant} export of {name} failed: {exc}" + (f"\nknown failure: {known}" if known else "")
            return result
        result.cache = art.meta.get("cache", "")
        result.export = {"path": str(art.path), "format": art.format, "bytes": art.bytes, "sizes": art.sizes,
                         **{k: v for k, v in art.meta.items() if k != "cache"}}
        if art.meta.get("cache") not in (None, "hit"):
            result.export["export_seconds"] = round(time.perf_counter() - t0, 2)
        try:
            session = self.session(name, variant, size)
        except BackendUnavailable as exc:
            result.verdict, result.message = "skip", f"{exc} (artifact converted: {art.path})"
            return result
        except Exception as exc:
            result.verdict = "xfail" if known else "error"
            result.message = f"loading the {variant} artifact failed: {type(exc).__name__}: {exc}"
            return result
        result.executor = getattr(session, "executor", "")
        policy = cmp.thresholds(backend.family, variant, spec.tolerances)
        result.thresholds = policy
        comps, failed_case = [], None
        for case in self.cases(name, size):
            try:
                out = session.run(case.inputs)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[-1][:500]
                result.verdict = "xfail" if known else "error"
                result.message = (f"{variant} could not run {case.id} ({size}px) with the artifact exported at "
                                  f"{art.sizes or spec.example_size}: {type(exc).__name__}: {first}")
                if os.environ.get("PARBENCH_DEBUG"):
                    result.message += "\n" + traceback.format_exc()
                return result
            comp = cmp.compare(out, case.golden, spec.task, backend.family, variant, spec.tolerances)
            comps.append(comp)
            result.cases.append(case.id)
            if not comp.passed and failed_case is None:
                failed_case = (case, comp)
        result.metrics = cmp.merge_case_metrics(comps)
        if failed_case is None:
            result.verdict = "pass"
            result.message = f"{len(comps)} case(s) within {backend.family} policy"
            if known:
                result.message += f"; listed as a known failure ({known}) but passed: remove it from known_failures"
            return result
        case, comp = failed_case
        result.verdict = "xfail" if known else "fail"
        where = f"artifact exported at {art.sizes[0] if art.sizes else spec.example_size}px"
        if art.meta.get("tracer_warnings"):
            where += "; the tracer warned: " + "; ".join(art.meta["tracer_warnings"][:2])
        result.message = (f"{name} as {variant} differs from eager at {size}px (case {case.id}; {where})\n"
                          + comp.explain() + (f"\nknown failure: {known}" if known else ""))
        if art.format == "mlpackage" and variant in BISECT_VARIANTS:
            result.message += "\n" + self._bisect_note(name, art, case)
        return result

    def _bisect_note(self, name: str, art: Artifact, case: fixtures.Case) -> str:
        """Where a Core ML program starts to differ from eager, op by op (reference executor)."""
        try:
            from parbench.coreml_ref.bisect import bisect

            # trace the same wrapper the Core ML forms convert, so value names line up
            found = bisect(TorchOutputFlattening(self.module(name)), art.path, case.inputs, first=5)
        except Exception as exc:  # the verdict stands without it
            return f"first diverging op: bisect could not run: {type(exc).__name__}: {exc}"
        return "first diverging ops (parbench bisect):\n" + found.render(rows=5)
