"""``MLModel``: coremltools' prediction API on top of the reference executor.

``parbench.coreml_ref.MLModel(path).predict({...})`` takes and returns what
``coremltools.models.MLModel(path).predict({...})`` does on a Mac, so code switches with one
line: multi-array inputs as numpy arrays, image inputs as PIL images, outputs as numpy arrays,
classifier outputs as a label and a ``{label: probability}`` dict, image outputs as PIL images.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parbench.coreml_ref.program import CompiledFunction, Hook, tensor_to_numpy
from parbench.coreml_ref.registry import CoreMLRefError

_ARRAY_DTYPES = {"FLOAT32": "fp32", "FLOAT16": "fp16", "DOUBLE": "fp64", "INT32": "int32"}
_NP = {"fp32": np.float32, "fp16": np.float16, "fp64": np.float64, "int32": np.int32}


class InputShapeError(CoreMLRefError, ValueError):
    """An input's shape (or image size) is not one the model description accepts."""


@dataclass
class FeatureSpec:
    """One input or output of the model description, as the executor checks it."""

    name: str
    kind: str  # array | image | string | int64 | dictionary | double
    dtype: str = "fp32"  # arrays: fp32 | fp16 | fp64 | int32; images: fp32 (fp16 for GRAYSCALE_FLOAT16)
    shape: tuple[int, ...] = ()  # default shape (arrays)
    ranges: list[tuple[int, int]] | None = None  # RangeDim bounds per dim (upper -1: unbounded)
    enumerated: list[tuple[int, ...]] | None = None  # EnumeratedShapes
    color: str = ""  # images: RGB | BGR | GRAYSCALE | GRAYSCALE_FLOAT16
    width: int = 0
    height: int = 0
    size_ranges: tuple[tuple[int, int], tuple[int, int]] | None = None  # (width, height) bounds
    sizes: list[tuple[int, int]] = field(default_factory=list)  # enumerated (width, height)

    def describe(self) -> str:
        if self.kind == "image":
            if self.sizes:
                return "image sizes (WxH) " + ", ".join(f"{w}x{h}" for w, h in self.sizes)
            if self.size_ranges:
                (wl, wu), (hl, hu) = self.size_ranges
                return f"image width in [{wl}, {_ub(wu)}] and height in [{hl}, {_ub(hu)}]"
            return f"a {self.width}x{self.height} (WxH) image"
        if self.enumerated:
            return "shapes " + ", ".join(str(tuple(s)) for s in self.enumerated)
        if self.ranges:
            return "shape " + str(tuple(f"{lo}..{_ub(hi)}" if lo != hi else lo for lo, hi in self.ranges))
        return f"shape {tuple(self.shape)}"


def _ub(v: int) -> str:
    return "inf" if v < 0 else str(v)


def _ft() -> Any:
    from coremltools.proto import FeatureTypes_pb2

    return FeatureTypes_pb2


def _feature(fd: Any) -> FeatureSpec:
    t = fd.type
    which = t.WhichOneof("Type")
    if which == "multiArrayType":
        ma = t.multiArrayType
        dt = _ARRAY_DTYPES.get(_ft().ArrayFeatureType.ArrayDataType.Name(ma.dataType), "fp32")
        spec = FeatureSpec(fd.name, "array", dt, tuple(int(s) for s in ma.shape))
        shape_flex = ma.WhichOneof("ShapeFlexibility")
        if shape_flex == "shapeRange":
            spec.ranges = [(int(r.lowerBound), int(r.upperBound)) for r in ma.shapeRange.sizeRanges]
        elif shape_flex == "enumeratedShapes":
            spec.enumerated = [tuple(int(s) for s in sh.shape) for sh in ma.enumeratedShapes.shapes]
        return spec
    if which == "imageType":
        it = t.imageType
        color = _ft().ImageFeatureType.ColorSpace.Name(it.colorSpace)
        spec = FeatureSpec(
            fd.name,
            "image",
            "fp16" if color == "GRAYSCALE_FLOAT16" else "fp32",
            color=color,
            width=int(it.width),
            height=int(it.height),
        )
        flex = it.WhichOneof("SizeFlexibility")
        if flex == "imageSizeRange":
            r = it.imageSizeRange
            spec.size_ranges = (
                (int(r.widthRange.lowerBound), int(r.widthRange.upperBound)),
                (int(r.heightRange.lowerBound), int(r.heightRange.upperBound)),
            )
        elif flex == "enumeratedSizes":
            spec.sizes = [(int(s.width), int(s.height)) for s in it.enumeratedSizes.sizes]
        return spec
    kinds = {
        "stringType": "string",
        "int64Type": "int64",
        "dictionaryType": "dictionary",
        "doubleType": "double",
    }
    if which in kinds:
        return FeatureSpec(fd.name, kinds[which])
    if which == "stateType":
        return FeatureSpec(fd.name, "state")
    raise CoreMLRefError(
        f"feature {fd.name!r} has type {which!r}, which the reference executor cannot handle"
    )


def _load_mlmodel(model: Any) -> Any:
    import coremltools as ct

    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if not p.exists():
            raise FileNotFoundError(f"no Core ML model at {p}")
        if p.is_file() and p.suffix == ".mlmodel":
            raise CoreMLRefError(
                f"{p} is a .mlmodel (neural network) file; the reference executor runs ML programs "
                "(.mlpackage, convert_to='mlprogram')"
            )
        return ct.models.MLModel(str(p), skip_model_load=True)
    if isinstance(model, ct.models.MLModel):
        return model
    raise TypeError(f"expected a .mlpackage path or a coremltools MLModel, got {type(model).__name__}")


class MLModel:
    """A saved Core ML ML program, run op by op with PyTorch kernels on CPU.

    Args:
        model: path to a ``.mlpackage`` or a ``coremltools.models.MLModel`` (loaded or not).
        function_name: function of a multifunction model (default: the model's default, ``main``).
        emulate_fp16: round every fp16-typed value to fp16 (True, Core ML's fp16 compute), or
            keep fp16 programs at fp32 compute over their fp16 weights (False).
        compute_units, skip_model_load: accepted for coremltools compatibility; ignored.
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        *,
        function_name: str | None = None,
        emulate_fp16: bool = True,
        compute_units: Any = None,
        skip_model_load: bool = False,
    ):
        # compute_units / skip_model_load are accepted so that code written for
        # coremltools.models.MLModel runs unchanged; the reference executor has one CPU path.
        del compute_units, skip_model_load
        from coremltools.converters.mil.frontend.milproto.load import load

        self._mlmodel = _load_mlmodel(model)
        spec = self._mlmodel.get_spec()
        kind = spec.WhichOneof("Type")
        if kind != "mlProgram":
            raise CoreMLRefError(
                f"model type is {kind!r}; the reference executor runs ML programs only "
                "(ct.convert(..., convert_to='mlprogram'))"
            )
        self._spec = spec
        weights_dir = getattr(self._mlmodel, "weights_dir", None) or ""
        prog = load(spec, spec.specificationVersion, weights_dir)
        desc = spec.description
        fname = function_name or desc.defaultFunctionName or "main"
        if fname not in prog.functions:
            raise CoreMLRefError(f"model has no function {fname!r}; it has {sorted(prog.functions)}")
        self.function_name = fname
        if desc.functions:
            fdesc = next((f for f in desc.functions if f.name == fname), None)
            inputs, outputs = (fdesc.input, fdesc.output) if fdesc is not None else (desc.input, desc.output)
        else:
            inputs, outputs = desc.input, desc.output
        self.inputs: OrderedDict[str, FeatureSpec] = OrderedDict((f.name, _feature(f)) for f in inputs)
        self.outputs: OrderedDict[str, FeatureSpec] = OrderedDict((f.name, _feature(f)) for f in outputs)
        if any(f.kind == "state" for f in self.inputs.values()):
            raise CoreMLRefError(
                "stateful models (Core ML states) are not supported by the reference executor"
            )
        self.emulate_fp16 = emulate_fp16
        self._fn = CompiledFunction(prog.functions[fname], emulate_fp16=emulate_fp16)
        self._program = prog
        missing = [n for n in self._fn.input_names if n not in self.inputs]
        if missing:
            raise CoreMLRefError(f"program inputs {missing} are not in the model description")
        # program outputs are matched to described outputs by name, else by position
        names = self._fn.output_names
        described = list(self.outputs)
        self._out_map = {d: (d if d in names else names[i]) for i, d in enumerate(described)}

    # -- coremltools-like surface ---------------------------------------------------------------
    def get_spec(self) -> Any:
        return self._spec

    @property
    def mlmodel(self) -> Any:
        return self._mlmodel

    @property
    def program(self) -> Any:
        """The PyMIL program read back from the package."""
        return self._program

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    @property
    def user_defined_metadata(self) -> dict[str, str]:
        return dict(self._spec.description.metadata.userDefined)

    @property
    def n_ops(self) -> int:
        return self._fn.n_ops

    def predict(
        self,
        data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        state: Any = None,
        *,
        hook: Hook | None = None,
    ) -> Any:
        """Run the model: ``{input name: array or PIL image}`` -> ``{output name: value}``.

        A list of input dicts returns a list of output dicts (as coremltools' batch predict).
        ``hook(name, op_type, tensor)`` is called with every value the program computes.
        """
        if state is not None:
            raise CoreMLRefError("stateful prediction is not supported by the reference executor")
        if isinstance(data, (list, tuple)):
            return [self.predict(d, hook=hook) for d in data]
        if not isinstance(data, Mapping):
            raise TypeError(f"predict() takes a dict of inputs, got {type(data).__name__}")
        feeds = self._feeds(data)
        raw = self._fn.run(feeds, hook=hook)
        return self._outputs(raw)

    def intermediates(
        self, data: Mapping[str, Any], names: Callable[[str], bool] | None = None
    ) -> tuple[dict[str, Any], OrderedDict[str, np.ndarray]]:
        """Outputs plus every intermediate value (float32 numpy) by MIL variable name."""
        captured: OrderedDict[str, np.ndarray] = OrderedDict()

        def hook(name: str, op_type: str, value: Any) -> None:
            if isinstance(value, torch.Tensor) and (names is None or names(name)):
                captured[name] = (
                    value.detach().float().numpy().copy()
                    if value.is_floating_point()
                    else value.numpy().copy()
                )

        out = self.predict(data, hook=hook)
        return out, captured

    def op_types(self) -> dict[str, str]:
        """MIL variable name -> op type for every runtime value (program order)."""
        return {n: st.op_type for st in self._fn.block.steps for n in st.out_names}

    def var_shapes(self) -> dict[str, tuple]:
        """MIL variable name -> static shape recorded in the program (may hold symbols)."""
        out: dict[str, tuple] = {}

        def walk(block: Any) -> None:
            for op in block.operations:
                for v in op.outputs:
                    if hasattr(v, "shape"):
                        out[v.name] = tuple(v.shape)
                for b in op.blocks:
                    walk(b)

        walk(self._program.functions[self.function_name])
        return out

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {f.describe()}" for n, f in self.inputs.items())
        return (
            f"<parbench.coreml_ref.MLModel {self._fn.n_ops} ops; inputs {ins}; outputs {list(self.outputs)}>"
        )

    # -- inputs ------------------------------------------------------------------------------
    def _feeds(self, data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        unknown = [k for k in data if k not in self.inputs]
        if unknown:
            raise CoreMLRefError(f"unknown input(s) {unknown}; the model's inputs are {list(self.inputs)}")
        feeds = {}
        for name, spec in self.inputs.items():
            if name not in data:
                raise CoreMLRefError(f"missing input {name!r}; the model's inputs are {list(self.inputs)}")
            if spec.kind == "image":
                arr = image_to_array(data[name], spec)
            elif spec.kind == "array":
                arr = self._array(name, data[name], spec)
            else:
                raise CoreMLRefError(f"input {name!r} of kind {spec.kind!r} is not supported")
            feeds[name] = torch.from_numpy(np.array(arr, copy=True, order="C"))
        return feeds

    def _array(self, name: str, value: Any, spec: FeatureSpec) -> np.ndarray:
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind in "USb" and spec.dtype != "bool":
            raise CoreMLRefError(f"input {name!r} must be a numeric array, got dtype {arr.dtype}")
        check_shape(name, tuple(arr.shape), spec)
        if spec.dtype == "int32":
            if arr.dtype.kind == "f" and not np.all(np.equal(np.mod(arr, 1), 0)):
                raise CoreMLRefError(f"input {name!r} is int32 but the array has non-integer values")
            return arr.astype(np.int32)
        # fp16 inputs are rounded by the executor (or kept when fp16 emulation is off)
        return arr.astype(np.float32) if spec.dtype in ("fp32", "fp16") else arr.astype(np.float64)

    # -- outputs -----------------------------------------------------------------------------
    def _outputs(self, raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in self.outputs.items():
            v = raw[self._out_map[name]]
            if spec.kind == "image":
                out[name] = array_to_image(v, spec)
            elif spec.kind == "array":
                dt = self._fn.output_dtypes.get(self._out_map[name], spec.dtype)
                if not self.emulate_fp16 and dt == "fp16":
                    dt = "fp32"
                arr = tensor_to_numpy(v, dt)
                out[name] = arr.astype(_NP[spec.dtype]) if spec.dtype in _NP and self.emulate_fp16 else arr
            else:
                out[name] = v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
        return out


def check_shape(name: str, shape: tuple[int, ...], spec: FeatureSpec) -> None:
    ok: bool
    if spec.enumerated:
        ok = shape in [tuple(s) for s in spec.enumerated]
    elif spec.ranges:
        ok = len(shape) == len(spec.ranges) and all(
            lo <= s and (hi < 0 or s <= hi) for s, (lo, hi) in zip(shape, spec.ranges, strict=True)
        )
    else:
        ok = shape == tuple(spec.shape)
    if not ok:
        raise InputShapeError(
            f"input {name!r} has shape {shape}, but the model accepts {spec.describe()}; resize the "
            "input, or convert the model with flexible shapes (ct.RangeDim / ct.EnumeratedShapes)"
        )


def image_to_array(value: Any, spec: FeatureSpec) -> np.ndarray:
    """A PIL image (or pixel array) -> the [1, C, H, W] float tensor Core ML feeds the program.

    Core ML hands the program raw pixel values (0-255) in the declared channel order; the
    ImageType's ``scale`` and ``bias`` are ops inside the program.  Arrays are accepted as
    ``H x W x C`` pixels in RGB order (``np.asarray(pil_image)``) or as ``[1, C, H, W]`` in the
    model's own channel order.
    """
    from PIL import Image

    gray = spec.color in ("GRAYSCALE", "GRAYSCALE_FLOAT16")
    if isinstance(value, Image.Image):
        w, h = value.size
        _check_image_size(spec, w, h)
        if spec.color == "GRAYSCALE_FLOAT16":
            px = np.asarray(value.convert("F"), dtype=np.float32)[None]
        elif gray:
            px = np.asarray(value.convert("L"), dtype=np.float32)[None]
        else:
            px = np.asarray(value.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
            if spec.color == "BGR":
                px = px[::-1]
        return np.ascontiguousarray(px[None])
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    channels = 1 if gray else 3
    if arr.ndim == 4 and arr.shape[:2] == (1, channels):
        _check_image_size(spec, arr.shape[3], arr.shape[2])
        return arr.astype(np.float32)
    if arr.ndim == 3 and arr.shape[2] == channels or (gray and arr.ndim == 2):
        hwc = arr if arr.ndim == 3 else arr[:, :, None]
        _check_image_size(spec, hwc.shape[1], hwc.shape[0])
        px = hwc.astype(np.float32).transpose(2, 0, 1)
        if spec.color == "BGR":
            px = px[::-1]
        return np.ascontiguousarray(px[None])
    raise CoreMLRefError(
        f"image input {spec.name!r} takes a PIL image, an HxWx{channels} pixel array or a "
        f"[1, {channels}, H, W] array; got an array of shape {arr.shape}"
    )


def _check_image_size(spec: FeatureSpec, w: int, h: int) -> None:
    if spec.sizes:
        ok = (w, h) in spec.sizes
    elif spec.size_ranges:
        (wl, wu), (hl, hu) = spec.size_ranges
        ok = wl <= w and (wu < 0 or w <= wu) and hl <= h and (hu < 0 or h <= hu)
    else:
        ok = (w, h) == (spec.width, spec.height)
    if not ok:
        raise InputShapeError(
            f"image input {spec.name!r} is {w}x{h} (WxH), but the model accepts {spec.describe()}; "
            "resize the image first (Core ML does not resize for you)"
        )


def array_to_image(v: Any, spec: FeatureSpec) -> Any:
    """[1, C, H, W] program output -> PIL image (values clipped to 0-255, as pixel buffers are)."""
    from PIL import Image

    arr = v.detach().float().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.float32)
    arr = arr.reshape(arr.shape[-3:]) if arr.ndim == 4 else arr
    if spec.color == "GRAYSCALE_FLOAT16":
        return Image.fromarray(arr[0].astype(np.float32), mode="F")
    px = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if spec.color == "GRAYSCALE":
        return Image.fromarray(px[0], mode="L")
    if spec.color == "BGR":
        px = px[::-1]
    return Image.fromarray(np.ascontiguousarray(px.transpose(1, 2, 0)), mode="RGB")
