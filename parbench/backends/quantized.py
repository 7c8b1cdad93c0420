"""PyTorch Mobile int8: post-training static quantization (qnnpack), saved as traced TorchScript.

FX graph mode (``prepare_fx``/``convert_fx`` with the qnnpack qconfig mapping) quantizes any
symbolically traceable model without per-model QuantStub/fusion code; it is calibrated on the
fixture images.  A model FX cannot trace but that has ``nn.Linear`` layers falls back to
dynamic quantization of those layers (recorded).  The converted model is traced with
``torch.jit.trace`` and saved as ``.pt`` -- the file an app loads with LibTorch.  Whether it also
saves and runs under the lite interpreter, and whether the traced graph runs at sizes other
than the one it was traced at, are checked at export and recorded.

Known upstream bug (torch 2.13): with the qnnpack engine, quantized ``hardtanh``/``relu6``/
``clamp`` on a channels-last tensor -- what qnnpack convolutions return -- writes the data in
channels-last order into a tensor labelled contiguous, scrambling it (x86/fbgemm are fine).
FX leaves ReLU6 unfused after a quantized conv, so every MobileNet-style model is hit.  The
export probes the kernel, counts such ops and records it; ``fix_clamp_layout=True`` inserts a
``contiguous()`` before each of them (the app-side workaround) and records that it did.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from parbench._util.console import error_text, quiet
from parbench._util.stages import stage
from parbench.backends.base import Artifact, Availability, ExportRequest, Family
from parbench.backends.export_support import (
    artifact_path,
    calibration_batches,
    check_module_paths,
    check_sizes,
    checked_keep_fp32,
    existing_path,
    exported_artifact,
    wants_dynamic,
)
from parbench.backends.torch_session import TorchModuleSession, to_numpy_outputs
from parbench.errors import ConfigError, ExportError, NeedsPerSize
from parbench.zoo.outputs import TorchOutputFlattening

ENGINE = "qnnpack"


@contextlib.contextmanager
def quantized_engine(engine: str = ENGINE) -> Iterator[None]:
    """Select the quantized kernels for a block (global torch state, restored after)."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


class QuantizedSession(TorchModuleSession):
    """The traced quantized module, run with the qnnpack kernels; it returns the flat tuple of
    ``TorchOutputFlattening``, so outputs are named by position."""

    def __init__(self, path: Path, input_names: Sequence[str], output_names: Sequence[str]):
        with quantized_engine():
            module = torch.jit.load(str(path), map_location="cpu")
        super().__init__(module.eval(), "torchscript", input_names, output_names, flat_outputs=True)

    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        with quantized_engine():
            return super().run(inputs)


_CLAMP_MODULES = (torch.nn.ReLU6, torch.nn.Hardtanh)
_CLAMP_FUNCTIONS = {
    torch.nn.functional.hardtanh,
    torch.nn.functional.hardtanh_,
    torch.nn.functional.relu6,
    torch.clamp,
    torch.clip,
}
_CLAMP_METHODS = {"clamp", "clamp_", "clip", "clip_"}
_clamp_probe: dict[str, bool] = {}


def clamp_layout_bug(engine: str = ENGINE) -> bool:
    """Does this torch's quantized clamp scramble channels-last tensors on ``engine``?"""
    if engine not in _clamp_probe:
        x = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).reshape(2, 4, 3, 3) / 8.0 - 4.0
        with quantized_engine(engine):
            q = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8).contiguous(
                memory_format=torch.channels_last
            )
            got = torch.nn.functional.hardtanh(q, 0.0, 6.0).dequantize()
        want = torch.nn.functional.hardtanh(q.dequantize(), 0.0, 6.0)
        _clamp_probe[engine] = not torch.allclose(got, want)
    return _clamp_probe[engine]


def _clamp_nodes(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """Nodes of a converted FX graph that run the quantized clamp kernel."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), _CLAMP_MODULES):
            found.append(node)
        elif node.op == "call_function" and node.target in _CLAMP_FUNCTIONS:
            found.append(node)
        elif node.op == "call_method" and node.target in _CLAMP_METHODS:
            found.append(node)
    return found


def _contiguous_before(gm: torch.fx.GraphModule, nodes: Sequence[torch.fx.Node]) -> None:
    """Feed each node a contiguous copy of its input (the clamp-layout workaround)."""
    for node in nodes:
        src = node.args[0]
        with gm.graph.inserting_before(node):
            contig = gm.graph.call_method("contiguous", (src,))
        node.replace_input_with(src, contig)
    gm.recompile()


def _has_linear(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Linear) for m in module.modules())


def _lite_check(traced: torch.jit.ScriptModule, example: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """Can this file also ship for the lite interpreter (.ptl)?  Save, load, run, compare."""
    from torch.jit.mobile import _load_for_lite_interpreter

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.ptl"
        try:
            traced._save_for_lite_interpreter(str(p))
            lite = _load_for_lite_interpreter(str(p))
            a, b = traced(*example), lite(*example)
        except Exception as exc:
            return {"ok": False, "error": error_text(exc, 3)}
    flat_a, flat_b = to_numpy_outputs(a, ()), to_numpy_outputs(b, ())
    diff = max(float(np.max(np.abs(flat_a[k] - flat_b[k]), initial=0.0)) for k in flat_a)
    return {"ok": True, "max_abs_vs_traced": diff}


class QuantizedInt8Backend:
    name = "quantized_int8"
    family: Family = "int8"
    shape_mode: Literal["any", "per_size"] = "any"
    suffix = ".pt"

    def __init__(
        self, check_lite: bool = True, fix_clamp_layout: bool = False, keep_fp32: Sequence[str] = ()
    ):
        for key, value in (("check_lite", check_lite), ("fix_clamp_layout", fix_clamp_layout)):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false, got {value!r}")
        self.check_lite = check_lite
        self.fix_clamp_layout = fix_clamp_layout
        self.keep_fp32 = checked_keep_fp32(keep_fp32, self.name)  # module paths left in fp32

    def available(self) -> Availability:
        engines = torch.backends.quantized.supported_engines
        if ENGINE not in engines:
            return Availability(
                False, False, f"this torch build has no {ENGINE} quantized engine (has {engines})"
            )
        return Availability(True, True, "", "torchscript")

    def options(self) -> dict[str, Any]:
        return {
            "engine": ENGINE,
            "flow": "fx",
            "qconfig": f"get_default_qconfig_mapping('{ENGINE}')",
            "fix_clamp_layout": self.fix_clamp_layout,
            "torch": torch.__version__,
        } | ({"keep_fp32": list(self.keep_fp32)} if self.keep_fp32 else {})

    def quantized_model(self, req: ExportRequest) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The quantized model :meth:`export` traces (before tracing), and what quantization decided,
        for tools that inspect it layer by layer (``parbench.diagnose``)."""
        meta: dict[str, Any] = {"engine": ENGINE, "notes": []}
        check_module_paths(req.module, self.keep_fp32, f"{self.name} keep_fp32")
        with quantized_engine(), quiet():
            return self._quantize(req, meta), meta

    def _quantize(self, req: ExportRequest, meta: dict[str, Any]) -> torch.nn.Module:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        # FX traces the model itself (TorchOutputFlattening's *args are not traceable); the
        # flattening wrapper goes around the converted model
        model = copy.deepcopy(req.module).eval()
        try:
            qconfig = get_default_qconfig_mapping(ENGINE)
            for path in self.keep_fp32:
                qconfig.set_module_name(path, None)
            with stage("quantize"):
                prepared = prepare_fx(model, qconfig, tuple(req.example_inputs))
        except Exception as exc:
            reason = error_text(exc, 3)
            if not _has_linear(model):
                raise ExportError(
                    f"quantized_int8: FX graph mode cannot trace the model: {reason}\n"
                    "Make the forward symbolically traceable (no data-dependent Python control flow), "
                    "or quantize it in eager mode with QuantStub/DeQuantStub and fused modules."
                ) from exc
            meta["flow"] = "dynamic"
            meta.setdefault("notes", []).append(
                f"FX graph mode cannot trace the model ({reason}); "
                "fell back to dynamic quantization of nn.Linear layers (convolutions stay fp32)"
                + ("; keep_fp32 is not applied by this fallback" if self.keep_fp32 else "")
            )
            dq = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            return TorchOutputFlattening(dq).eval()
        # any size works for calibration: the FX graph is not shape-specialized
        batches, note = calibration_batches(req, fixed=False)
        with stage("calibration"), torch.no_grad():
            for xs in batches:
                prepared(*xs)
        meta["flow"] = "fx"
        meta["calibration"] = len(batches)
        if note:
            meta.setdefault("notes", []).append(note)
        with stage("quantize"):
            converted = convert_fx(prepared)
        self._clamp_check(converted, meta)
        if self.keep_fp32:
            meta["keep_fp32"] = list(self.keep_fp32)
            self._kept_check(converted, meta)
        return TorchOutputFlattening(converted).eval()

    def _kept_check(self, converted: torch.fx.GraphModule, meta: dict[str, Any]) -> None:
        """FX lowers a float op between two int8 neighbours to int8 anyway: say so per kept path."""
        for path in self.keep_fp32:
            still = [
                name
                for name, m in converted.named_modules()
                if (name == path or name.startswith(path + "."))
                and type(m).__module__.startswith("torch.ao.nn.quantized")
            ]
            if still:
                meta["notes"].append(
                    f"keep_fp32 {path!r}: {', '.join(still)} still int8 (FX lowers an op between two int8 "
                    "neighbours to int8); keep its neighbours in fp32 too"
                )

    def _clamp_check(self, converted: torch.fx.GraphModule, meta: dict[str, Any]) -> None:
        nodes = _clamp_nodes(converted)
        meta["clamp_ops"] = len(nodes)
        if not nodes or not clamp_layout_bug():
            return
        meta["upstream_bug"] = "qnnpack-clamp-channels-last"
        if self.fix_clamp_layout:
            _contiguous_before(converted, nodes)
            meta["notes"].append(
                f"{len(nodes)} quantized hardtanh/relu6/clamp ops: inserted contiguous() before each to "
                f"avoid the torch {torch.__version__} qnnpack bug that scrambles channels-last tensors"
            )
        else:
            meta["notes"].append(
                f"{len(nodes)} quantized hardtanh/relu6/clamp ops run the qnnpack clamp kernel, which in "
                f"torch {torch.__version__} scrambles channels-last tensors (what qnnpack convolutions "
                "return): expect large errors; QuantizedInt8Backend(fix_clamp_layout=True) works around it"
            )

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        path = artifact_path(out, self.suffix)
        meta: dict[str, Any] = {"engine": ENGINE, "notes": []}
        check_module_paths(req.module, self.keep_fp32, f"{self.name} keep_fp32")
        with quantized_engine(), quiet():
            try:
                quantized = self._quantize(req, meta)
            except ExportError:
                raise
            except Exception as exc:
                raise ExportError(
                    f"quantized_int8: post-training quantization failed: {error_text(exc)}\n"
                    "Check that every op has a quantized kernel in the qnnpack engine, or exclude "
                    "the module from quantization in the qconfig mapping."
                ) from exc
            try:
                with torch.no_grad(), stage("trace"):
                    traced = torch.jit.trace(quantized, tuple(req.example_inputs), check_trace=False)
            except Exception as exc:
                raise ExportError(
                    f"quantized_int8: torch.jit.trace of the quantized model failed: {error_text(exc)}"
                ) from exc
            dynamic = wants_dynamic(req)
            if dynamic:  # before saving: a NeedsPerSize leaves nothing behind
                meta["sizes_checked"] = self._check_sizes(req, traced, quantized)
            path.parent.mkdir(parents=True, exist_ok=True)
            with stage("save"):
                traced.save(str(path))
            if self.check_lite:
                with stage("verify"):
                    meta["lite"] = _lite_check(traced, tuple(req.example_inputs))
        meta["dynamic_shapes"] = dynamic
        return exported_artifact(self.name, req, path, "pt", dynamic, meta)

    def _check_sizes(
        self, req: ExportRequest, traced: torch.jit.ScriptModule, quantized: torch.nn.Module
    ) -> list[int]:
        """The traced graph must run at the other sizes *and* agree with the untraced model."""

        def run(xs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
            with torch.no_grad():
                got = to_numpy_outputs(traced(*xs), ())
                want = to_numpy_outputs(quantized(*xs), ())
            for k in want:
                if got[k].shape == want[k].shape and not np.allclose(got[k], want[k], atol=1e-5, rtol=1e-4):
                    raise NeedsPerSize(
                        f"quantized_int8: the traced graph runs at {xs[0].shape[-1]} px but its output "
                        f"{k!r} differs from the quantized model's (a size was baked in by tracing); "
                        "export one artifact per size"
                    )
            return list(got.values())

        return check_sizes(req, self.name, run)

    def load(self, artifact: Artifact) -> QuantizedSession:
        return QuantizedSession(existing_path(artifact), artifact.input_names, artifact.output_names)
