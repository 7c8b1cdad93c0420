"""Model registry: built-in models in three tiers, plus user models from a TOML file.

A ModelSpec says how to build a model (factory), what it does (task), what it eats (inputs, as
shape templates where "size" stands for the input size), at which sizes it runs, and how strict
parity must be.  ``load_model`` builds it with deterministic weights; for networks with batch norm
the statistics are re-estimated on real images so activations have realistic scale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import sys
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from parbench import images

TASKS = ("classification", "segmentation", "image-to-image", "detection", "generic")
TIERS = ("smoke", "default", "full")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ZOO_VERSION = 1  # bump when built-in weights or calibration change
BN_CALIBRATION_IMAGES = 8


class ConfigError(ValueError):
    """A model entry in a parbench config is wrong; the message names the model and the key."""


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
            "weights_sha256": _file_sha256(self.weights) if self.weights else None,
            "zoo_version": ZOO_VERSION,
            "torch": torch.__version__,
        }

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()

    def resolve_factory(self) -> Callable[[], nn.Module]:
        if callable(self.factory):
            return self.factory
        return _import_factory(self.name, self.factory)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


# Measured, not assumed: Core ML's ImageType has one scale for all channels, so ImageNet's
# per-channel std is folded with a 0.5-1.3% per-channel scale error, which these (seeded, not
# trained) networks amplify past the fp16 policy.  coreml_image_exact is the exact alternative.
FOLDED_NORMALIZATION = ("folded ImageType normalization: ImageNet's per-channel std cannot be folded into "
                        "Core ML's single image scale (up to 1.3% scale error per channel); "
                        "see coreml_image_exact and docs/coreml-image.md")


# torch 2.13 bug: qnnpack's quantized clamp/relu6/hardtanh on a channels-last tensor (what its
# convolutions return) writes channels-last data into a tensor labelled contiguous.  Every
# conv -> ReLU6 of a MobileNet-style model is hit; an app on PyTorch Mobile would be too.
QNNPACK_CLAMP = ("upstream torch bug: qnnpack quantized clamp/relu6 on channels-last tensors scrambles "
                 "its output (ReLU6 after every conv here); QuantizedInt8Backend(fix_clamp_layout=True) "
                 "inserts the contiguous() workaround")


def _builtins() -> list[ModelSpec]:
    from parbench import models as m

    default_sizes = (256, 300, 400, 512, 640)
    gen_io = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    return [
        ModelSpec("tiny_classifier", "classification", m.tiny_classifier, (224, 320), 224,
                  tiers=frozenset({"smoke"}), description="MobileNetV2 x0.35 (smoke tier)",
                  known_failures={"coreml_image": FOLDED_NORMALIZATION, "quantized_int8": QNNPACK_CLAMP}),
        ModelSpec("tiny_generator", "image-to-image", m.tiny_generator, (256, 320), 256,
                  tiers=frozenset({"smoke"}), description="AnimeGAN-style generator, width 8 (smoke tier)",
                  **gen_io),
        ModelSpec("mobilenet_v2", "classification", m.mobilenet_v2, default_sizes, 256,
                  tiers=frozenset({"default", "full"}), description="MobileNetV2 (torchvision)",
                  known_failures={"coreml_image": FOLDED_NORMALIZATION, "quantized_int8": QNNPACK_CLAMP}),
        ModelSpec("deeplabv3_mobilenet_v3", "segmentation", m.deeplabv3_mobilenet_v3, default_sizes, 256,
                  tiers=frozenset({"default", "full"}),
                  description="DeepLabV3, MobileNetV3-Large backbone (torchvision), dict output",
                  known_failures={"coreml_image": FOLDED_NORMALIZATION}),
        ModelSpec("animegan", "image-to-image", m.AnimeGANGenerator, default_sizes, 256,
                  tiers=frozenset({"default", "full"}),
                  description="AnimeGAN-style generator: residual blocks, instance norm, bilinear upsampling",
                  **gen_io),
        ModelSpec("ssdlite_mobilenet_v3", "detection", m.SSDLiteRaw, default_sizes, 256,
                  tiers=frozenset({"default", "full"}),
                  description="SSDLite/MobileNetV3 detector, raw boxes and class logits before NMS",
                  known_failures={"coreml_image": FOLDED_NORMALIZATION, "quantized_int8": QNNPACK_CLAMP}),
        # ImageNet-normalized too, but its coreml_image error (rel_l2 1.4e-2) is inside the fp16 policy
        ModelSpec("small_vit", "classification", m.SmallViT, default_sizes, 256,
                  tiers=frozenset({"default", "full"}),
                  description="ViT, 4 blocks x 192 dims, convolutional positional encoding"),
        ModelSpec("resnet50", "classification", m.resnet50, default_sizes, 256,
                  tiers=frozenset({"full"}), description="ResNet-50 (torchvision)",
                  known_failures={"coreml_image": FOLDED_NORMALIZATION}),
        ModelSpec("deeplabv3_resnet101", "segmentation", m.deeplabv3_resnet101, default_sizes, 256,
                  tiers=frozenset({"full"}), description="DeepLabV3, ResNet-101 backbone (torchvision)",
                  known_failures={"coreml_image": FOLDED_NORMALIZATION}),
    ]


# --------------------------------------------------------------------------------------------
# user models from TOML

_KEYS = {"factory", "task", "sizes", "inputs", "weights", "example_size", "tolerances",
         "known_failures", "mean", "std", "description"}


def parse_config(path: Path) -> list[ModelSpec]:
    """Read `[models.NAME]` tables from a parbench TOML file, or `[tool.parbench.models.NAME]`
    from a pyproject.toml."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parbench config {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"parbench config {str(path)!r} is not valid TOML: {exc}") from exc
    if path.name == "pyproject.toml" or "tool" in data:
        data = data.get("tool", {}).get("parbench", {})
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(
            f"parbench config {str(path)!r} defines no models: add a [models.NAME] table "
            "(or [tool.parbench.models.NAME] in pyproject.toml)"
        )
    # user factories usually live next to the config
    if str(path.parent.resolve()) not in sys.path:
        sys.path.insert(0, str(path.parent.resolve()))
    specs = [_parse_model(name, entry, path) for name, entry in models.items()]
    for spec in specs:
        spec.resolve_factory()  # import errors surface now, naming the model and the key
    return specs


def _parse_model(name: str, entry: Any, path: Path) -> ModelSpec:
    where = f"model {name!r} in {path.name}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table [models.{name}]")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known keys: {sorted(_KEYS)}")
    if "factory" not in entry:
        raise ConfigError(f"{where}: missing key 'factory' (e.g. factory = \"my_pkg.nets:build\")")
    if not isinstance(entry["factory"], str):
        raise ConfigError(f"{where}: key 'factory' must be a string 'package.module:function'")
    task = entry.get("task", "generic")
    if task not in TASKS:
        raise ConfigError(f"{where}: key 'task' = {task!r} is not one of {', '.join(TASKS)}")
    sizes = entry.get("sizes", [256])
    if (not isinstance(sizes, list) or not sizes
            or not all(isinstance(s, int) and 8 <= s <= 8192 for s in sizes)):
        raise ConfigError(f"{where}: key 'sizes' must be a non-empty list of integers 8..8192, got {sizes!r}")
    example = entry.get("example_size", sizes[0])
    if not isinstance(example, int) or example < 8:
        raise ConfigError(f"{where}: key 'example_size' must be an integer >= 8, got {example!r}")
    inputs = tuple(_parse_input(where, i, raw) for i, raw in enumerate(
        entry.get("inputs", [{"name": "image", "shape": [1, 3, "size", "size"]}])))
    if len({i.name for i in inputs}) != len(inputs):
        raise ConfigError(f"{where}: key 'inputs' has duplicate names")
    weights = entry.get("weights")
    if weights is not None:
        weights = (path.parent / weights).resolve()
        if not weights.is_file():
            raise ConfigError(f"{where}: key 'weights' = {entry['weights']!r}: no such file ({weights})")
    tolerances = entry.get("tolerances", {})
    if not isinstance(tolerances, dict) or not all(
        isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()) for v in tolerances.values()
    ):
        raise ConfigError(f"{where}: key 'tolerances' must hold tables like [models.{name}.tolerances.onnx] "
                          "with numeric thresholds, e.g. rel_l2 = 1e-3")
    known = entry.get("known_failures", {})
    if not isinstance(known, dict) or not all(isinstance(v, str) for v in known.values()):
        raise ConfigError(f"{where}: key 'known_failures' must map variant names to reason strings")
    kw: dict[str, Any] = {}
    for key in ("mean", "std"):
        if key in entry:
            val = entry[key]
            if not (isinstance(val, list) and all(isinstance(x, (int, float)) for x in val)):
                raise ConfigError(f"{where}: key {key!r} must be a list of numbers")
            kw[key] = tuple(float(x) for x in val)
    return ModelSpec(name=name, task=task, factory=entry["factory"], sizes=tuple(sizes), example_size=example,
                     inputs=inputs, tiers=frozenset({"user"}), weights=weights,
                     tolerances={k: {m: float(x) for m, x in v.items()} for k, v in tolerances.items()},
                     known_failures=dict(known), description=entry.get("description", ""),
                     source=str(path), **kw)


def _parse_input(where: str, index: int, raw: Any) -> InputSpec:
    if not isinstance(raw, dict) or "name" not in raw or "shape" not in raw:
        raise ConfigError(f"{where}: key 'inputs[{index}]' must be a table with 'name' and 'shape', got {raw!r}")
    shape = raw["shape"]
    if not isinstance(shape, list) or not shape or not all(
        (isinstance(d, int) and d > 0) or d == "size" for d in shape
    ):
        raise ConfigError(f"{where}: key 'inputs[{index}].shape' must list positive integers or \"size\", "
                          f"got {shape!r}")
    dtype = raw.get("dtype", "float32")
    if dtype not in ("float32", "int64", "int32"):
        raise ConfigError(f"{where}: key 'inputs[{index}].dtype' = {dtype!r}: use float32, int64 or int32")
    return InputSpec(str(raw["name"]), tuple(shape), dtype)


def registry(config_path: Path | str | None = None) -> OrderedDict[str, ModelSpec]:
    """Built-in models, then the models of `config_path` (a user model may not reuse a built-in name)."""
    reg: OrderedDict[str, ModelSpec] = OrderedDict((s.name, s) for s in _builtins())
    if config_path:
        for spec in parse_config(Path(config_path)):
            if spec.name in reg and reg[spec.name].source == "built-in":
                raise ConfigError(f"model {spec.name!r} in {config_path}: the name is taken by a built-in model")
            reg[spec.name] = spec
    return reg


def select(reg: Mapping[str, ModelSpec], tier: str | None = None, models: Iterable[str] | None = None,
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


# --------------------------------------------------------------------------------------------
# building models


def example_inputs(spec: ModelSpec, size: int, index: int = 0) -> OrderedDict[str, np.ndarray]:
    """The model's inputs at `size`, made from image number `index` (0 = the photo)."""
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for k, inp in enumerate(spec.inputs):
        shape = inp.concrete(size)
        if inp.kind == "rgb":
            arr = images.to_tensor_array(images.variation(index, size), spec.mean, spec.std)
            arr = np.repeat(arr, shape[0], axis=0) if shape[0] > 1 else arr
        elif inp.kind == "gray":
            arr = images.to_gray_array(images.variation(index, size))
            arr = np.repeat(arr, shape[0], axis=0) if shape[0] > 1 else arr
        else:
            rng = np.random.default_rng([index, k, size])
            if inp.dtype == "float32":
                arr = rng.standard_normal(shape).astype(np.float32)
            else:
                arr = rng.integers(0, 100, size=shape).astype(inp.dtype)
        out[inp.name] = np.ascontiguousarray(arr)
    return out


def _to_tensors(inputs: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(v) for v in inputs.values())


def calibration_inputs(spec: ModelSpec, size: int, n: int = BN_CALIBRATION_IMAGES) -> list[tuple[torch.Tensor, ...]]:
    """Seeded variations of the photo (never the parity cases themselves), for BN and int8 calibration."""
    return [_to_tensors(example_inputs(spec, size, 100 + i)) for i in range(n)]


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
    """Build the model in eval mode with deterministic weights (cached on disk by spec hash)."""
    torch.manual_seed(_seed(spec.name))
    factory = spec.resolve_factory()
    try:
        module = factory()
    except Exception as exc:
        raise ConfigError(f"model {spec.name!r}: factory {spec.factory_name} raised "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(f"model {spec.name!r}: factory {spec.factory_name} returned "
                          f"{type(module).__name__}, not a torch.nn.Module")
    if spec.weights:
        try:
            state = torch.load(spec.weights, map_location="cpu", weights_only=True)
            module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as exc:
            raise ConfigError(f"model {spec.name!r}: key 'weights' = {spec.weights}: could not load the "
                              f"state dict: {type(exc).__name__}: {exc}") from exc
        return module.eval()
    if not _has_batchnorm(module):
        return module.eval()
    cached = Path(cache_dir) / "models" / f"{spec.name}-{spec.spec_hash[:16]}.pt" if cache_dir else None
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
