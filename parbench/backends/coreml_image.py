"""Core ML image form (``coreml_image``): the model as an app sees it.

Apps hand Core ML a pixel buffer, not a normalized tensor.  This form converts the model with
an ``ImageType`` input (RGB, 8-bit pixels, batch 1) and puts the model's normalization inside
the package, in one of two ways (option ``normalization``):

* ``"folded"`` (default, what most shipped models do): Core ML's own preprocessing,
  ``scale * pixel + bias[c]``.  It has ONE scale for all channels, while torchvision-style
  normalization ``(pixel / 255 - mean[c]) / std[c]`` has one per channel, so the fold is exact
  only when the three stds are equal.  We use ``s = sum(std^2) / sum(std)``: with unit-variance
  normalized channels (what dividing by std means) it minimizes the summed squared input error
  over the channels; ``bias[c] = -mean[c] / s`` is then the least-squares bias too, because the
  mean pixel is ``255 * mean[c]`` by definition.  Channel c then sees its normalized value
  times ``std[c] / s``: the per-channel scale error is recorded, with its effect on the eager
  model's own outputs (``fold_error``), in the artifact meta.
* ``"exact"``: ``ImageType(scale=1/255, bias=0)`` and ``(x - mean) / std`` as the first layer
  of the converted model: no approximation, two cheap ops more.

Classifiers (task ``classification``, an output of shape ``[1, C]``) get a ``ClassifierConfig``
with deterministic labels (:mod:`.coreml_labels`; ImageNet names for 1000 classes, else
``class_0``...): the package outputs ``classLabel`` and the ``classLabel_probs`` dictionary, as
Xcode previews and Vision expect.  Option ``classifier``: ``"softmax"`` (default) puts softmax
probabilities in the dictionary and keeps the logits as a plain output under the eager name;
``"identity"`` puts the model's own output in the dictionary (models that end in softmax) and
the session rebuilds the tensor from it in label order; ``"none"`` leaves plain tensor outputs.

Parity is measured from the same 8-bit image the eager pipeline normalized: the session
inverts the fixture's normalization exactly (fixtures come from 8-bit images) and feeds a PIL
image to the package, as an app feeds a pixel buffer.  ML program at fp16 compute (Core ML's
default precision).  Flexible sizes: ``EnumeratedShapes`` (or ``RangeDim``) on the image, per
size when the model does not convert with flexible shapes (NeedsPerSize), as ``coreml.py``.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

import parbench
from parbench._util.console import quiet
from parbench._util.stages import stage
from parbench.backends.base import Artifact, ExportRequest, Family
from parbench.backends.coreml import (
    Converted,
    CoreMLBase,
    CoreMLSession,
    Executor,
    Flexible,
    Frontend,
    resize_to_runtime_size,
)
from parbench.backends.coreml_labels import (
    LABEL_NAME,
    PROBS_NAME,
    class_labels,
    package_labels,
    preview_metadata,
    preview_type,
)
from parbench.backends.export_support import (
    all_sizes,
    as_float32,
    existing_path,
    output_names,
    torch_dynamic_shapes,
)
from parbench.errors import ConfigError, ExportError, SessionError
from parbench.zoo.outputs import flatten_outputs

if TYPE_CHECKING:
    from PIL import Image

    from parbench.zoo import ModelSpec

Normalization = Literal["folded", "exact"]
ClassifierMode = Literal["softmax", "identity", "none"]
_NORMALIZATIONS: tuple[Normalization, ...] = ("folded", "exact")
_CLASSIFIER_MODES: tuple[ClassifierMode, ...] = ("softmax", "identity", "none")
FORM_REVISION = 3  # bump when the exported package changes for the same options

PIXEL_GRID_TOLERANCE = 1e-3  # fixtures invert to 0..255 within ~2e-5 of an integer
_HINT = (
    "coremltools could not convert the model with an image input. If an op is missing, register a "
    "composite op (coremltools.converters.mil.frontend.torch.register_torch_op); check that the "
    "coreml_fp16 form converts the model."
)


# ---------------------------------------------------------------------------------------------
# normalization


def applies_to(spec: ModelSpec) -> str | None:
    """None if the form applies to the model, else why not (the harness skips with it)."""
    if len(spec.inputs) != 1:
        return (
            f"the form feeds one RGB image; {spec.name} takes {len(spec.inputs)} inputs "
            f"({', '.join(spec.input_names)})"
        )
    inp = spec.inputs[0]
    if inp.kind != "rgb":
        return (
            f"the form applies to RGB-image models only: input {inp.name!r} of {spec.name} has "
            f"shape {list(inp.shape)} and dtype {inp.dtype} (an RGB image is [1, 3, 'size', 'size'] "
            "float32)"
        )
    if inp.shape[0] != 1:
        return (
            f"Core ML image inputs take one image; input {inp.name!r} of {spec.name} has batch {inp.shape[0]}"
        )
    if len(spec.mean) != 3 or len(spec.std) != 3:
        return f"{spec.name}: mean and std must have 3 values (R, G, B), got {spec.mean} and {spec.std}"
    if not all(math.isfinite(s) and s > 0 for s in spec.std):
        return f"{spec.name}: std must be positive, got {spec.std}"
    return None


def fold(mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """Core ML's ``scale * pixel + bias[c]`` closest to ``(pixel / 255 - mean[c]) / std[c]``.

    ``scale_error[c]``: channel c's normalized input comes out multiplied by ``1 + scale_error[c]``
    (``std[c] / s - 1``); zero for every channel only when the stds are equal.
    """
    s = sum(x * x for x in std) / sum(std)
    errors = [x / s - 1.0 for x in std]
    return {
        "scale": 1.0 / (255.0 * s),
        "bias": [-m / s for m in mean],
        "shared_std": s,
        "scale_error": errors,
        "max_scale_error": max(abs(e) for e in errors),
    }


def to_pixels(x: np.ndarray, mean: Sequence[float], std: Sequence[float], name: str = "image") -> np.ndarray:
    """Invert ``(pixel / 255 - mean) / std`` on a ``[1, 3, H, W]`` array: ``H x W x 3`` uint8.

    Exact for inputs made from 8-bit images (parbench fixtures); anything else is refused,
    because an app can only hand Core ML 8-bit pixels.
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[:2] != (1, 3):
        raise SessionError(
            f"input {name!r} has shape {tuple(x.shape)}; coreml_image takes one RGB image [1, 3, H, W]"
        )
    # float32 is enough: fixture pixels come back within ~2e-5 of an integer
    p = x[0].astype(np.float32) * (np.asarray(std, np.float32) * 255).reshape(3, 1, 1)
    p += (np.asarray(mean, np.float32) * 255).reshape(3, 1, 1)
    r = np.rint(p)
    off = float(np.abs(p - r).max()) if p.size else 0.0
    if not np.isfinite(off) or off > PIXEL_GRID_TOLERANCE or r.min() < 0 or r.max() > 255:
        raise SessionError(
            f"input {name!r} is not an 8-bit RGB image normalized with mean={tuple(mean)} std={tuple(std)}: "
            f"un-normalized it spans {p.min():.4g}..{p.max():.4g} with values up to {off:.3g} off the "
            "integer pixel grid. coreml_image feeds Core ML a pixel buffer, so give it inputs made from "
            "8-bit images (parbench fixtures, parbench.zoo.inputs.to_tensor_array)"
        )
    return np.ascontiguousarray(r.transpose(1, 2, 0)).astype(np.uint8)


def to_image(x: np.ndarray, mean: Sequence[float], std: Sequence[float], name: str = "image") -> Image.Image:
    from PIL import Image

    return Image.fromarray(to_pixels(x, mean, std, name), "RGB")


# ---------------------------------------------------------------------------------------------
# the converted module


class _AppModel(torch.nn.Module):
    """What gets converted: optional exact normalization first, flattened outputs, and the
    softmax probabilities of a classifier output appended last."""

    def __init__(
        self,
        inner: torch.nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        exact: bool,
        softmax_of: int | None,
    ):
        super().__init__()
        self.inner = inner
        self.exact = exact
        self.softmax_of = softmax_of
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.exact:
            x = (x - self.mean) / self.std
        outs = tuple(flatten_outputs(self.inner(x)).values())
        if self.softmax_of is not None:
            outs = (*outs, torch.softmax(outs[self.softmax_of], dim=-1))
        return outs


_PREFIX_OPS = {"add", "sub", "mul", "real_div", "batch_norm"}


def _on_input_path(var: Any) -> bool:
    """True for the image input and for values computed from it by elementwise ops only."""
    op = var.op
    if op is None:
        return True
    if op.op_type not in _PREFIX_OPS:
        return False
    return any(
        _on_input_path(v)
        for v in op.inputs.values()
        if getattr(v, "op", None) is None or v.op.op_type != "const"
    )


def keep_prefix_fp32(op: Any) -> bool:
    """``FP16ComputePrecision`` op selector: fp16 for every op but the elementwise ops that
    normalize the image (exact mode), so the normalized input is rounded to fp16 once, as when
    the app passes a normalized fp32 tensor."""
    return not (op.op_type in _PREFIX_OPS and _on_input_path(op.outputs[0]))


def _classifier_output(req: ExportRequest, names: Sequence[str]) -> tuple[str, int] | None:
    """The classification output: the first [1, C] output (C > 1) of a classification model."""
    if req.spec.task != "classification":
        return None
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in flatten_outputs(req.module(*req.example_inputs)).values()]
    for name, shape in zip(names, shapes, strict=True):
        if len(shape) == 2 and shape[0] == 1 and shape[1] > 1:
            return name, int(shape[1])
    return None


def _fold_error(req: ExportRequest, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Eager outputs with the folded preprocessing against the exact one, on the example image
    in fp32: what folding alone costs, apart from fp16 compute.  Per output: the largest absolute
    difference, the relative L2 error and the cosine similarity."""
    spec = req.spec
    f = fold(tuple(spec.mean), tuple(spec.std))
    x = req.example_inputs[0].double()
    m = torch.tensor(spec.mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(spec.std, dtype=torch.float64).view(1, 3, 1, 1)
    pixels = (x * s + m) * 255.0
    folded = (pixels * f["scale"] + torch.tensor(f["bias"], dtype=torch.float64).view(1, 3, 1, 1)).float()
    with torch.no_grad():
        ref = flatten_outputs(req.module(req.example_inputs[0]))
        got = flatten_outputs(req.module(folded))
    out = {}
    for name, r, a in zip(names, ref.values(), got.values(), strict=True):
        r64, a64 = r.double().numpy().ravel(), a.double().numpy().ravel()
        nr, na = float(np.linalg.norm(r64)), float(np.linalg.norm(a64))
        out[name] = {
            "max_abs": round(float(np.abs(a64 - r64).max(initial=0.0)), 6),
            "rel_l2": round(float(np.linalg.norm(a64 - r64)) / max(nr, 1e-12), 6),
            "cosine": round(float(a64 @ r64) / (na * nr) if na and nr else float(na == nr), 6),
        }
    return out


# ---------------------------------------------------------------------------------------------
# session


class CoreMLImageSession(CoreMLSession):
    """Normalized fixture arrays in, the eager model's named outputs out; the package is fed a
    PIL image in between, as an app feeds a pixel buffer."""

    def __init__(self, artifact: Artifact, compute_units: str, prefer: str):
        super().__init__(artifact.path, artifact.input_names, artifact.output_names, compute_units, prefer)
        meta = artifact.meta
        self.input_name = self.input_names[0]
        self.image_name = meta["image_input"]
        self.mean = tuple(meta["mean"])
        self.std = tuple(meta["std"])
        cls = meta.get("classifier") or {}
        self.rebuilt = cls.get("output") if cls.get("mode") == "identity" else None
        # the dictionary is rebuilt into a tensor in the classify op's label order
        self.labels: list[Any] = package_labels(self.model.get_spec()) if self.rebuilt else []
        self.last_raw: dict[str, Any] = {}  # what the package returned last (classLabel, dict, ...)
        self._last: tuple[np.ndarray, np.ndarray, Any] | None = None

    def image(self, x: np.ndarray) -> Image.Image:
        """The 8-bit image behind a normalized input.  Repeated runs on the same array (timing
        rounds) reuse it: an app hands Core ML pixels and never pays this inversion."""
        last = self._last
        if last is not None and last[0] is x and np.array_equal(last[1], x):
            return last[2]
        img = to_image(x, self.mean, self.std, self.input_name)
        self._last = (x, np.array(x, copy=True), img)
        return img

    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        if self.input_name not in inputs:
            raise SessionError(f"missing input {self.input_name!r}; got {sorted(inputs)}")
        raw = self.model.predict({self.image_name: self.image(inputs[self.input_name])})
        self.last_raw = raw
        out: OrderedDict[str, np.ndarray] = OrderedDict()
        for name in self.output_names:
            if name == self.rebuilt:
                out[name] = self._from_dict(raw)
            elif name in raw:
                out[name] = as_float32(raw[name])
            else:
                raise SessionError(
                    f"the Core ML model returned {sorted(raw)}, missing {name!r}; re-export it"
                )
        return out

    def _from_dict(self, raw: Mapping[str, Any]) -> np.ndarray:
        probs = raw.get(PROBS_NAME)
        if not isinstance(probs, Mapping):
            raise SessionError(f"the Core ML classifier returned no {PROBS_NAME!r} dictionary; re-export it")
        missing = [k for k in self.labels if k not in probs]
        if missing:
            raise SessionError(f"{PROBS_NAME} lacks labels {missing[:5]}; re-export the package")
        return np.asarray([[probs[k] for k in self.labels]], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# backend


class CoreMLImageBackend(CoreMLBase):
    name = "coreml_image"
    family: Family = "fp16"
    precision: Literal["float16", "float32"] = "float16"  # ML program default compute precision
    default_normalization: Normalization = "folded"

    def __init__(
        self,
        normalization: Normalization | None = None,
        classifier: ClassifierMode = "softmax",
        frontend: Frontend = "trace",
        flexible: Flexible = "enumerated",
        target: str = "iOS17",
        compute_units: str = "ALL",
        executor: Executor = "auto",
        license: str = "unspecified",
    ):
        normalization = normalization or self.default_normalization
        if normalization not in _NORMALIZATIONS:
            raise ConfigError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        if classifier not in _CLASSIFIER_MODES:
            raise ConfigError(f"classifier must be one of {_CLASSIFIER_MODES}, got {classifier!r}")
        if not isinstance(license, str):
            raise ConfigError(f"license must be a string (written into the package), got {license!r}")
        super().__init__(frontend, flexible, target, compute_units, executor)
        self.normalization: Normalization = normalization
        self.classifier: ClassifierMode = classifier
        self.license = license

    def applies_to(self, spec: ModelSpec) -> str | None:
        return applies_to(spec)

    def options(self) -> dict[str, Any]:
        opts = super().options()
        del opts["io_dtype"]  # the input is an image; outputs stay float32
        opts.update(
            input="ImageType RGB",
            normalization=self.normalization,
            classifier=self.classifier,
            license=self.license,
            revision=FORM_REVISION,
        )
        return opts

    # -- export -----------------------------------------------------------------------------
    def _image_type(self, req: ExportRequest, name: str, dynamic: bool) -> Any:
        import coremltools as ct

        spec = req.spec
        base = tuple(req.example_inputs[0].shape)
        if not dynamic:
            shape: Any = base
        elif self.flexible == "enumerated":
            shape = ct.EnumeratedShapes(shapes=[(1, 3, s, s) for s in all_sizes(req)], default=base)
        else:
            lo, hi = all_sizes(req)[0], all_sizes(req)[-1]
            shape = ct.Shape(
                [1, 3, ct.RangeDim(lo, hi, default=base[2]), ct.RangeDim(lo, hi, default=base[3])]
            )
        if self.normalization == "exact":
            scale, bias = 1.0 / 255.0, [0.0, 0.0, 0.0]
        else:
            f = fold(tuple(spec.mean), tuple(spec.std))
            scale, bias = f["scale"], f["bias"]
        return ct.ImageType(name=name, shape=shape, scale=scale, bias=bias, color_layout=ct.colorlayout.RGB)

    def _convert_image(
        self,
        frontend: Frontend,
        req: ExportRequest,
        dynamic: bool,
        names: Sequence[str],
        cls: tuple[str, int] | None,
        labels: Sequence[str],
    ) -> Any:
        import coremltools as ct

        spec = req.spec
        softmax = cls is not None and self.classifier == "softmax"
        softmax_of = list(names).index(cls[0]) if cls is not None and softmax else None
        model = _AppModel(req.module, spec.mean, spec.std, self.normalization == "exact", softmax_of).eval()
        out_names = [*names, f"{cls[0]}_softmax"] if softmax and cls else list(names)
        example = tuple(req.example_inputs)
        with quiet(), torch.no_grad(), resize_to_runtime_size():
            if frontend == "torch.export":
                # one positional argument (the image): the spec of *args' first element
                shapes = torch_dynamic_shapes(req)[0] if dynamic else None
                with stage("torch.export"):
                    source: Any = torch.export.export(
                        model, example, dynamic_shapes=shapes
                    ).run_decompositions({})
            else:
                with stage("trace"):
                    source = torch.jit.trace(model, example, check_trace=False)
            exact = self.normalization == "exact"
            kwargs: dict[str, Any] = dict(
                convert_to="mlprogram",
                compute_precision=ct.transform.FP16ComputePrecision(keep_prefix_fp32)
                if exact
                else ct.precision.FLOAT16,
                minimum_deployment_target=getattr(ct.target, self.target),
            )
            inputs = [self._image_type(req, spec.input_names[0], dynamic)]
            outputs = [ct.TensorType(name=n, dtype=np.float32) for n in out_names]
            if cls is None or self.classifier == "none":
                with stage("conversion"):
                    return ct.convert(source, inputs=inputs, outputs=outputs, **kwargs)
            # coremltools 9.0 fails (IndexError in get_func_output) when ClassifierConfig meets a
            # model with another tensor output and typed outputs (ours, or fp16 I/O defaults at
            # iOS16+).  So: convert to a MIL program first, then add the classifier to that
            # program with no further passes.
            kwargs["convert_to"] = "milinternal"
            with stage("conversion"):
                prog = ct.convert(source, inputs=inputs, outputs=outputs, **kwargs)
            prog.functions["main"].output_types = None  # output dtypes are already set by now
            config = ct.ClassifierConfig(
                list(labels),
                predicted_feature_name=LABEL_NAME,
                predicted_probabilities_output=out_names[-1] if softmax else cls[0],
            )
            with stage("conversion"):
                return ct.convert(
                    prog,
                    convert_to="mlprogram",
                    classifier_config=config,
                    minimum_deployment_target=getattr(ct.target, self.target),
                    pass_pipeline=ct.PassPipeline.EMPTY,
                )

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        if reason := applies_to(req.spec):
            raise ExportError(f"{self.name}: {reason}")
        spec = req.spec
        names = output_names(req)
        clashes = {LABEL_NAME, PROBS_NAME} & set(names)
        if clashes:
            raise ExportError(
                f"the model's outputs {sorted(clashes)} clash with Core ML's classifier outputs; rename them"
            )
        cls = _classifier_output(req, names) if self.classifier != "none" else None
        if cls is not None:
            labels, label_source = class_labels(cls[1], "classification")
        else:
            labels, label_source = [], ""
        conv = self._converted(
            req, lambda f, dynamic: self._convert_image(f, req, dynamic, names, cls, labels), _HINT
        )
        norm = self._normalization_meta(req, names)
        seg_labels: list[str] = []
        if spec.task == "segmentation":
            seg_labels, label_source = self._segmentation_labels(req)
        self._describe(conv, req, names, cls, norm, seg_labels)
        meta: dict[str, Any] = {
            "image_input": spec.input_names[0],
            "package_outputs": [o.name for o in conv.mlmodel.get_spec().description.output],
            "mean": list(spec.mean),
            "std": list(spec.std),
            "normalization": norm,
            "classifier": None
            if cls is None
            else {
                "output": cls[0],
                "classes": cls[1],
                "mode": self.classifier,
                "label_source": label_source,
                "first_labels": labels[:5],
            },
            "preview_type": preview_type(spec.task, cls is not None),
        }
        if seg_labels:
            meta["segmentation_labels"] = {"count": len(seg_labels), "label_source": label_source}
        return self._package(req, out, conv, meta)

    def _normalization_meta(self, req: ExportRequest, names: Sequence[str]) -> dict[str, Any]:
        spec = req.spec
        f = fold(tuple(spec.mean), tuple(spec.std))
        folded = self.normalization == "folded"
        return {
            "mode": self.normalization,
            "image_scale": f["scale"] if folded else 1.0 / 255.0,
            "image_bias": f["bias"] if folded else [0.0, 0.0, 0.0],
            "shared_std": f["shared_std"],
            # folded: the error this package carries; exact: the error it avoids
            "scale_error": [round(e, 6) for e in f["scale_error"]],
            "max_scale_error": round(f["max_scale_error"], 6),
            "fold_error": _fold_error(req, names),
        }

    @staticmethod
    def _segmentation_labels(req: ExportRequest) -> tuple[list[str], str]:
        with torch.no_grad():
            first = next(iter(flatten_outputs(req.module(*req.example_inputs)).values()))
        if first.dim() != 4:
            return [], ""
        return class_labels(int(first.shape[1]), "segmentation")

    def _describe(
        self,
        conv: Converted,
        req: ExportRequest,
        names: Sequence[str],
        cls: tuple[str, int] | None,
        norm: Mapping[str, Any],
        seg_labels: Sequence[str],
    ) -> None:
        """Metadata apps and Xcode read: descriptions, author, version, license, preview type."""
        mlmodel, spec = conv.mlmodel, req.spec
        what = spec.description or spec.name
        mlmodel.short_description = (
            f"{what}: {spec.task} from an RGB image; {self.normalization} "
            f"normalization (mean {list(spec.mean)}, std {list(spec.std)})"
        )
        mlmodel.author = "parbench"
        mlmodel.version = f"{spec.name} (parbench {parbench.__version__})"
        mlmodel.license = self.license
        sizes = (
            ", ".join(f"{s}x{s}" for s in all_sizes(req))
            if conv.dynamic
            else f"{req.export_size}x{req.export_size}"
        )
        mlmodel.input_description[spec.input_names[0]] = (
            f"RGB image, 8-bit pixels, {sizes}; normalization inside the model ({self.normalization})"
        )
        described = {o.name for o in mlmodel.get_spec().description.output}
        for name in names:
            if name in described:
                kind = "logits" if cls and name == cls[0] else "tensor"
                mlmodel.output_description[name] = f"{kind} {name!r}, as the PyTorch model returns it"
        if LABEL_NAME in described:
            mlmodel.output_description[LABEL_NAME] = "most likely class label"
            mlmodel.output_description[PROBS_NAME] = (
                "softmax probability per class label"
                if self.classifier == "softmax"
                else f"the model's {cls[0] if cls else ''} output per class label"
            )
        md = mlmodel.user_defined_metadata
        # what coremltools records for a direct conversion (the classifier path goes through MIL)
        md["com.github.apple.coremltools.source"] = f"torch=={torch.__version__}"
        md["com.github.apple.coremltools.source_dialect"] = (
            "TorchScript" if conv.frontend == "trace" else "TorchExport::ATEN"
        )
        md["parbench.model"] = spec.name
        md["parbench.task"] = spec.task
        md["parbench.frontend"] = conv.frontend
        md["parbench.normalization"] = self.normalization
        md["parbench.mean"] = json.dumps(list(spec.mean))
        md["parbench.std"] = json.dumps(list(spec.std))
        md["parbench.image_scale"] = repr(norm["image_scale"])
        md["parbench.image_bias"] = json.dumps(norm["image_bias"])
        md["parbench.max_scale_error"] = (
            repr(norm["max_scale_error"]) if self.normalization == "folded" else "0"
        )
        for key, value in preview_metadata(spec.task, cls is not None, seg_labels).items():
            md[key] = value

    def load(self, artifact: Artifact) -> CoreMLImageSession:
        existing_path(artifact, folder=True)
        if "image_input" not in artifact.meta:
            raise SessionError(f"{artifact.path} was not exported by the {self.name} form; re-export it")
        return CoreMLImageSession(artifact, self.compute_units, self.executor)


class CoreMLImageExactBackend(CoreMLImageBackend):
    """The same form with exact normalization, to compare with the folded default side by side."""

    name = "coreml_image_exact"
    default_normalization: Normalization = "exact"
