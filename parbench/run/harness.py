"""The harness: models, fixtures, cached artifacts and sessions for model x variant x size.  The
parity check (:mod:`.parity`), the latency measurement (:mod:`.latency`), the pytest plugins and the
CLI all go through it.

Data flows one way: ModelSpec -> nn.Module -> (golden outputs, Backend.export -> Artifact) ->
Backend.load -> Session.run -> outputs.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from parbench import zoo
from parbench._util.locks import file_lock
from parbench._util.stages import stage
from parbench.backends import VARIANTS, get_backend
from parbench.backends.base import Artifact, Backend, ExportRequest, Session
from parbench.errors import ConfigError, FixtureError, NeedsPerSize
from parbench.fixtures import Case, FixtureSet
from parbench.fixtures.build import build as build_fixtures
from parbench.run.cache import ArtifactCache, CacheOutcome, cache_key

CASES_PER_SIZE = 2
SESSIONS_KEPT = 3


class Harness:
    def __init__(
        self,
        config_path: Path | str | None = None,
        cache_dir: Path | str = ".parbench-cache",
        log: Callable[[str], None] | None = None,
        registry: dict[str, zoo.ModelSpec] | None = None,
    ):
        self.registry = registry if registry is not None else zoo.registry(config_path)
        for spec in self.registry.values():
            for variant in spec.options:
                if variant not in VARIANTS:
                    raise ConfigError(
                        f"model {spec.name!r}: options.{variant}: unknown variant; known: {', '.join(VARIANTS)}"
                    )
        self.cache_dir = Path(cache_dir)
        self.cache = ArtifactCache(self.cache_dir)
        self.log = log or (lambda msg: None)
        self._modules: dict[str, torch.nn.Module] = {}
        self._digests: dict[str, str] = {}
        self._fixtures: dict[str, FixtureSet] = {}
        self._sessions: OrderedDict[tuple[str, str, str], Session] = OrderedDict()

    # ---- models and fixtures --------------------------------------------------------------
    def spec(self, name: str) -> zoo.ModelSpec:
        try:
            return self.registry[name]
        except KeyError:
            raise ConfigError(f"unknown model {name!r}; known: {', '.join(self.registry)}") from None

    def module(self, name: str) -> torch.nn.Module:
        if name not in self._modules:
            with stage("model"):
                self._modules[name] = zoo.load_model(self.spec(name), self.cache_dir)
        return self._modules[name]

    def model_digest(self, name: str) -> str:
        """What the model computes: sha256 over its state (names, shapes, dtypes, bytes) and the
        source of its nn.Module classes.  Part of every artifact key and of the fixture set's name, so
        a changed weight, architecture or ``forward`` never reuses an old artifact or old goldens."""
        if name not in self._digests:
            module = self.module(name)
            with stage("model"):
                h = hashlib.sha256(zoo.code_digest(module).encode())
                for key, tensor in module.state_dict().items():
                    t = tensor.detach().cpu().contiguous()
                    h.update(f"{key}:{t.dtype}:{list(t.shape)}".encode())
                    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._digests[name] = h.hexdigest()
        return self._digests[name]

    def fixture_set(self, name: str) -> FixtureSet:
        """The model's fixture set, built once into the cache (and rebuilt if corrupt)."""
        if name in self._fixtures:
            return self._fixtures[name]
        digest = self.model_digest(name)
        with stage("fixtures"):
            self._fixtures[name] = self._open_fixtures(name, digest)
        return self._fixtures[name]

    def _open_fixtures(self, name: str, digest: str) -> FixtureSet:
        spec = self.spec(name)
        sizes = "_".join(map(str, spec.sizes))
        key = hashlib.sha256(f"{spec.spec_hash}:{digest}".encode()).hexdigest()[:16]
        root = self.cache_dir / "fixtures" / f"{name}-{key}-{sizes}-c{CASES_PER_SIZE}"
        with file_lock(Path(str(root) + ".lock")):
            try:
                fs = FixtureSet.open(root)
                fs.verify(name)  # every tensor now, not mid-run
            except FixtureError as exc:
                if (root / "manifest.json").exists():
                    self.log(f"rebuilding fixtures for {name}: {exc}")
                else:
                    self.log(f"building fixtures for {name} at {sizes.replace('_', ', ')} px")
                fs = build_fixtures(root, [spec], lambda s: self.module(s.name), CASES_PER_SIZE)
        return fs

    def cases(self, name: str, size: int) -> list[Case]:
        cases = self.fixture_set(name).cases(name, size)
        if not cases:
            raise ConfigError(
                f"model {name!r} has no fixtures at size {size} (its sizes: "
                f"{list(self.spec(name).sizes)}); add the size to the model's 'sizes'"
            )
        return cases

    def inputs(self, name: str, size: int, case: int = 0) -> OrderedDict[str, np.ndarray]:
        return self.cases(name, size)[case].inputs

    def output_names(self, name: str) -> list[str]:
        return list(self.fixture_set(name).model(name).outputs)

    # ---- artifacts and sessions -----------------------------------------------------------
    def backend(self, name: str, variant: str) -> Backend:
        """The form, built with the model's options for it (``[models.NAME.options.VARIANT]``)."""
        options = self.spec(name).options.get(variant, {})
        try:
            return get_backend(variant, **options)
        except ConfigError as exc:
            raise ConfigError(f"model {name!r}, options.{variant}: {exc}") from None

    def skip_reason(self, name: str, variant: str, size: int) -> str | None:
        backend = self.backend(name, variant)
        applies_to = getattr(backend, "applies_to", None)  # optional: a form for some models only
        if applies_to is not None and (why := applies_to(self.spec(name))):
            return f"{variant} does not apply to {name}: {why}"
        avail = backend.available()
        if not avail.can_export:
            return f"{variant} cannot export here: {avail.reason}"
        return None

    def export_request(self, name: str, variant: str, export_size: int, per_size: bool) -> ExportRequest:
        """What a form is asked to convert: the model with example inputs at ``export_size``, for
        that size only or for all of the model's sizes; calibration images for the int8 forms; the
        folder where forms share ``torch.export`` programs of this model and example."""
        spec, backend = self.spec(name), self.backend(name, variant)
        example = tuple(torch.from_numpy(v) for v in zoo.example_inputs(spec, export_size).values())
        sizes = [export_size] if per_size else list(spec.sizes)
        key = cache_key(
            {
                "spec": spec.identity(),
                "model": self.model_digest(name),
                "inputs": [i.concrete(0) for i in spec.inputs],
                "example_size": export_size,
                "sizes": sizes,
                "torch": torch.__version__,
            }
        )
        return ExportRequest(
            module=self.module(name),
            spec=spec,
            example_inputs=example,
            export_size=export_size,
            sizes=sizes,
            per_size=per_size,
            calibration=zoo.calibration_inputs(spec, export_size) if backend.family == "int8" else (),
            output_names=self.output_names(name),
            programs=self.cache.root / "programs" / name / key[:16],
        )

    def _export_fn(
        self, name: str, variant: str, export_size: int, per_size: bool
    ) -> Callable[[Path], Artifact]:
        backend = self.backend(name, variant)

        def export(out: Path) -> Artifact:
            req = self.export_request(name, variant, export_size, per_size)
            self.log(f"exporting {name} -> {variant}" + (f" at {export_size}px" if per_size else ""))
            art = backend.export(req, out)
            art.meta.setdefault("shape_mode", "per_size" if per_size else "any")
            return art

        return export

    def artifact(self, name: str, variant: str, size: int) -> Artifact:
        """The artifact that serves `size` (see :meth:`cached_artifact`)."""
        return self.cached_artifact(name, variant, size).artifact

    def cached_artifact(self, name: str, variant: str, size: int) -> CacheOutcome:
        """The artifact that serves `size`, and how the cache served it ("hit", "exported",
        "rebuilt (...)"; "" for eager, which is not exported).  One artifact exported at the
        example size when the form can serve every size from one file, else (or when that fails
        for this model) one per size."""
        with stage("artifact"):
            return self._cached_artifact(name, variant, size)

    def _cached_artifact(self, name: str, variant: str, size: int) -> CacheOutcome:
        spec, backend = self.spec(name), self.backend(name, variant)
        if variant == "eager":
            names = self.output_names(name)
            req = ExportRequest(self.module(name), spec, (), size, spec.sizes, False, output_names=names)
            return CacheOutcome(backend.export(req, Path()), "")
        base_key = {
            "spec": spec.identity(),
            "model": self.model_digest(name),
            "variant": variant,
            "options": backend.options(),
            "inputs": [i.concrete(0) for i in spec.inputs],
        }
        fallback = ""
        if backend.shape_mode == "any":
            try:
                return self.cache.get_or_export(
                    name,
                    variant,
                    "any",
                    dict(base_key, example_size=spec.example_size, sizes=spec.sizes),
                    self._export_fn(name, variant, spec.example_size, per_size=False),
                )
            except NeedsPerSize as exc:
                fallback = str(exc)
        outcome = self.cache.get_or_export(
            name,
            variant,
            str(size),
            dict(base_key, example_size=size, per_size=True),
            self._export_fn(name, variant, size, per_size=True),
        )
        if fallback:
            outcome.artifact.meta["per_size_reason"] = fallback
        return outcome

    def session(self, name: str, variant: str, size: int) -> Session:
        art = self.artifact(name, variant, size)
        key = (name, variant, str(art.path))
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        with stage("load"):
            sess = self.backend(name, variant).load(art)
        self._sessions[key] = sess
        while len(self._sessions) > SESSIONS_KEPT:
            self._sessions.popitem(last=False)
        return sess
