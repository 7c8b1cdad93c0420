"""Model specs and the registry: built-in models in three tiers, plus user models from a TOML file.

A ModelSpec says how to build a model (factory), what it does (task), what it eats (inputs, as
shape templates where "size" stands for the input size), at which sizes it runs, and how strict
parity must be.  Building it with deterministic weights is :mod:`parbench.zoo.weights`' job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parbench._util.hashing import sha256_file
from parbench._util.versions import version_of
from parbench.errors import ConfigError
from parbench.records.config import TASKS

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TASKS", "TIERS", "ModelSpec", "InputSpec", "registry", "select"]

TIERS = ("smoke", "default", "full")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ZOO_VERSION = 1  # bump when built-in weights or calibration change


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str, ...]  # "size" is replaced by the case's input size
    dtype: str = "float32"

    def concrete(self, size: int) -> tuple[int, ...]:
        return tuple(size if d == "size" else int(d) for d in self.shape)

    @property
    def kind(self) -> str:
        """How fixture data is made: an RGB photo, a grayscale photo, or seeded noise."""
        s = self.shape
        if len(s) == 4 and s[2] == "size" and s[3] == "size" and self.dtype == "float32":
            if s[1] == 3:
                return "rgb"
            if s[1] == 1:
                return "gray"
        return "random"


@dataclasses.dataclass
class ModelSpec:
    name: str
    task: str
    factory: Callable[[], nn.Module] | str  # callable or "package.module:function"
    sizes: tuple[int, ...]
    example_size: int
    inputs: tuple[InputSpec, ...] = (InputSpec("image", (1, 3, "size", "size")),)
    tiers: frozenset[str] = frozenset()
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    weights: Path | None = None
    tolerances: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    known_failures: dict[str, str] = dataclasses.field(default_factory=dict)  # variant -> reason
    # variant -> the form's options (get_backend keyword arguments), e.g. keep_fp32 for int8 forms
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    description: str = ""
    source: str = "built-in"

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def factory_name(self) -> str:
        f = self.factory
        return f if isinstance(f, str) else f"{f.__module__}:{f.__qualname__}"

    def identity(self) -> dict[str, Any]:
        """What decides the model's weights and inputs (part of every cache key)."""
        return {
            "name": self.name,
            "factory": self.factory_name,
            "inputs": [dataclasses.astuple(i) for i in self.inputs],
            "mean": self.mean,
            "std": self.std,
            "weights_sha256": sha256_file(self.weights) if self.weights else None,
            "code": factory_source_digest(self.factory),
            "zoo_version": ZOO_VERSION,
            "torch": version_of("torch"),
        }

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()

    def resolve_factory(self) -> Callable[[], nn.Module]:
        if callable(self.factory):
            return self.factory
        return _import_factory(self.name, self.factory)


def factory_source_digest(factory: Callable[..., Any] | str) -> str | None:
    """sha256 of the source file that defines a user factory (None for built-ins, which the zoo
    version and the torch version cover): editing the factory's module changes every key."""
    if isinstance(factory, str):
        mod_name = factory.split(":", 1)[0]
    else:
        mod_name = getattr(factory, "__module__", "") or ""
    if mod_name.startswith("parbench."):
        return None
    spec = importlib.util.find_spec(mod_name) if mod_name else None
    origin = getattr(spec, "origin", None)
    if not origin or not Path(origin).is_file():
        return None
    return sha256_file(origin)


def _import_factory(model: str, target: str) -> Callable[[], nn.Module]:
    if ":" not in target:
        raise ConfigError(f"model {model!r}: factory = {target!r} must look like 'package.module:function'")
    mod_name, attr = target.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, or the module's own error on import
        raise ConfigError(
            f"model {model!r}: factory = {target!r}: importing {mod_name!r} failed: "
            f"{type(exc).__name__}: {exc}. Is the package installed or next to the config file?"
        ) from exc
    fn = getattr(mod, attr, None)
    if fn is None or not callable(fn):
        raise ConfigError(f"model {model!r}: factory = {target!r}: {mod_name} has no callable {attr!r}")
    return fn


# --------------------------------------------------------------------------------------------
# built-in models


def registry(config_path: Path | str | None = None) -> OrderedDict[str, ModelSpec]:
    """Built-in models, then the models of `config_path` (a user model may not reuse a built-in name)."""
    from parbench.zoo.builtin import builtins
    from parbench.zoo.config import parse_config

    reg: OrderedDict[str, ModelSpec] = OrderedDict((s.name, s) for s in builtins())
    if config_path:
        for spec in parse_config(Path(config_path)):
            if spec.name in reg and reg[spec.name].source == "built-in":
                raise ConfigError(
                    f"model {spec.name!r} in {config_path}: the name is taken by a built-in model"
                )
            reg[spec.name] = spec
    return reg


def select(
    reg: Mapping[str, ModelSpec],
    tier: str | None = None,
    models: Iterable[str] | None = None,
) -> list[ModelSpec]:
    """Models by explicit names, else by tier; user models (from a config) are picked by default."""
    if models:
        names = list(models)
        unknown = [n for n in names if n not in reg]
        if unknown:
            raise ConfigError(f"unknown model(s) {unknown}; known: {', '.join(reg)}")
        return [reg[n] for n in names]
    user = [s for s in reg.values() if "user" in s.tiers]
    if tier is None and user:
        return user
    tier = tier or "default"
    if tier not in TIERS:
        raise ConfigError(f"unknown tier {tier!r}; use one of {', '.join(TIERS)}")
    return [s for s in reg.values() if tier in s.tiers] + user
