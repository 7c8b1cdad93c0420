"""Building a model with deterministic weights.

Weights are seeded from the model's name; for networks with batch norm the running statistics are
re-estimated on real images (with default init in eval mode MobileNetV2's outputs are ~1e-9 and
every comparison would pass trivially).  The recalibrated state is cached on disk, keyed by the
spec and the model's code, so an edited model never reuses stale statistics.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from parbench.errors import ConfigError
from parbench.zoo.inputs import calibration_inputs
from parbench.zoo.spec import ModelSpec


def code_digest(module: nn.Module) -> str:
    """sha256 over the source of every nn.Module class in ``module`` outside torch/torchvision
    (whose code the torch version in every key covers): editing a model's ``forward`` changes it."""
    h = hashlib.sha256()
    seen: set[type] = set()
    for sub in module.modules():
        cls = type(sub)
        if cls in seen or cls.__module__.split(".")[0] in ("torch", "torchvision"):
            continue
        seen.add(cls)
        try:
            src = inspect.getsource(cls)
        except (OSError, TypeError):  # defined in a REPL or a C extension: its name is all we have
            src = ""
        h.update(f"{cls.__module__}.{cls.__qualname__}\n{src}".encode())
    return h.hexdigest()


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, batches: Sequence[tuple[torch.Tensor, ...]]) -> None:
    """Re-estimate BN running statistics on real images (cumulative average over all batches)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.train()
    stacked = tuple(torch.cat(parts) for parts in zip(*batches, strict=True))
    module(*stacked)
    for bn in bns:
        bn.momentum = 0.1
    module.eval()


def _seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


def load_model(spec: ModelSpec, cache_dir: Path | str | None = ".parbench-cache") -> nn.Module:
    """Build the model in eval mode with deterministic weights (recalibrated batch-norm state cached on
    disk, keyed by the spec and the model's code)."""
    torch.manual_seed(_seed(spec.name))
    factory = spec.resolve_factory()
    try:
        module = factory()
    except Exception as exc:
        raise ConfigError(
            f"model {spec.name!r}: factory {spec.factory_name} raised {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"model {spec.name!r}: factory {spec.factory_name} returned "
            f"{type(module).__name__}, not a torch.nn.Module"
        )
    if spec.weights:
        try:
            state = torch.load(spec.weights, map_location="cpu", weights_only=True)
            module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as exc:
            raise ConfigError(
                f"model {spec.name!r}: key 'weights' = {spec.weights}: could not load the "
                f"state dict: {type(exc).__name__}: {exc}"
            ) from exc
        return module.eval()
    if not _has_batchnorm(module):
        return module.eval()
    key = hashlib.sha256(f"{spec.spec_hash}:{code_digest(module)}".encode()).hexdigest()[:16]
    cached = Path(cache_dir) / "models" / f"{spec.name}-{key}.pt" if cache_dir else None
    if cached and cached.is_file():
        try:
            module.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
            return module.eval()
        except Exception:  # a torn or stale cache file: rebuild it below
            cached.unlink(missing_ok=True)
    recalibrate_batchnorm(module, calibration_inputs(spec, spec.example_size))
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{id(module)}")
        torch.save(module.state_dict(), tmp)
        tmp.replace(cached)
    return module
