"""Helpers the forms share: input and output names, the dynamic-size description for
``torch.export``, the ``torch.export`` programs shared between forms, the size probe and the
per-size fallback, calibration inputs for the int8 forms, and the check that an artifact is still
on disk before it is loaded.  Each form stays one module;
what they have in common lives here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from parbench._util.console import error_text, quiet
from parbench._util.locks import file_lock
from parbench._util.stages import stage
from parbench.backends.base import Artifact, ExportRequest
from parbench.errors import BackendUnavailable, ConfigError, ExportError, NeedsPerSize, SessionError
from parbench.zoo.outputs import TorchOutputFlattening, flatten_outputs

T = TypeVar("T")


def exported_artifact(
    variant: str, req: ExportRequest, path: Path, fmt: str, every_size: bool, meta: dict[str, Any]
) -> Artifact:
    """The Artifact of an export: ``every_size`` when one file serves every size, else it serves
    the export size only; named with the request's input and output names."""
    return Artifact(
        variant,
        path,
        fmt,
        None if every_size else [int(req.export_size)],
        meta,
        input_names=input_names(req),
        output_names=output_names(req),
    )


def artifact_path(out: Path, suffix: str) -> Path:
    """``out`` plus the form's suffix (``with_suffix`` would eat dots inside the cache name)."""
    out = Path(out)
    return out.parent / f"{out.name}{suffix}"


def input_names(req: ExportRequest) -> list[str]:
    """Input names from the spec, in argument order; ``input_<i>`` if the spec has none."""
    names = list(getattr(req.spec, "input_names", None) or [])
    n = len(req.example_inputs)
    if not names:
        return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]
    if len(names) != n:
        raise ExportError(
            f"the model spec names {len(names)} inputs {names} but the example has {n} tensors; "
            "make spec.input_names match the model's forward arguments"
        )
    return names


def output_names(req: ExportRequest, module: torch.nn.Module | None = None) -> list[str]:
    """``req.output_names``, or the eager model's flattened output names when not given."""
    if req.output_names:
        return list(req.output_names)
    with torch.no_grad():
        return list(flatten_outputs((module or req.module)(*req.example_inputs)))


def sized_dims(req: ExportRequest) -> list[tuple[int, ...]]:
    """Per input, the dims that follow the input size: H and W of 4-D floating inputs."""
    dims: list[tuple[int, ...]] = []
    for x in req.example_inputs:
        if x.dim() == 4 and x.is_floating_point():
            dims.append(tuple(d for d in (2, 3) if x.shape[d] == req.export_size))
        else:
            dims.append(())
    return dims


def all_sizes(req: ExportRequest) -> list[int]:
    return sorted({int(s) for s in req.sizes} | {int(req.export_size)})


def wants_dynamic(req: ExportRequest) -> bool:
    """One artifact must serve several sizes (and the inputs have size dims to vary)."""
    return (not req.per_size) and len(all_sizes(req)) > 1 and any(sized_dims(req))


def torch_dynamic_shapes(req: ExportRequest) -> tuple[tuple[dict[int, Any] | None, ...]]:
    """``dynamic_shapes`` for ``torch.export`` of ``TorchOutputFlattening`` (``*args``).

    Height and width get their own ``Dim`` bounded by the smallest and largest requested
    size (ExecuTorch plans memory for the upper bound).
    """
    lo, hi = all_sizes(req)[0], all_sizes(req)[-1]
    h = torch.export.Dim("height", min=lo, max=hi)
    w = torch.export.Dim("width", min=lo, max=hi)
    specs: list[dict[int, Any] | None] = []
    for dims in sized_dims(req):
        specs.append({d: (h if d == 2 else w) for d in dims} or None)
    return (tuple(specs),)


@contextlib.contextmanager
def size_oblivious(program: Any = None) -> Iterator[None]:
    """Size-oblivious reasoning for the input sizes (``backed_size_oblivious``) inside the block.

    Without it ``torch.export`` pins a dynamic dim whenever a size derived from it is 1 at the
    example (0/1 specialization: a detector's last feature maps are 1x1 at small inputs only).
    Given the ``program`` being lowered, guards that later passes still take (on memory formats,
    from the example's sizes) do not narrow its size range either; the artifact is then run at
    the extreme sizes (:func:`check_sizes`).
    """
    from torch.fx.experimental import _config

    with _config.patch(backed_size_oblivious=True), _kept_size_range(program):
        yield


def _kept_size_range(program: Any) -> contextlib.AbstractContextManager[Any]:
    for node in program.graph.nodes if program is not None else ():
        for dim in getattr(node.meta.get("val"), "shape", ()):
            if isinstance(dim, torch.SymInt):
                return dim.node.shape_env.suppress_guards()
    return contextlib.nullcontext()


def shared_program(req: ExportRequest, name: str, make: Callable[[dict[str, Any]], Any], meta: dict) -> Any:
    """The ``torch.export`` program ``name`` of this request's model, made once and shared by the
    forms that lower from it ("export once, lower many").

    The first form to ask calls ``make(notes)`` and saves the program (``torch.export.save``) with
    its notes (e.g. that it needed size-oblivious export) under ``req.programs``; the others, in
    this process or another, load it.  ``name`` must say everything the program depends on beyond
    the model and its example inputs (the folder's key).  The notes are merged into ``meta``.
    Without ``req.programs``, or for a program ``torch.export.save`` cannot write, each form
    exports its own."""
    if req.programs is None:
        return make(meta)
    path = Path(req.programs) / f"{name}.pt2"
    notes_path = path.with_suffix(".json")
    with file_lock(path.with_suffix(".lock")):
        if path.exists() and notes_path.exists():
            try:
                with stage("program load"):
                    ep = torch.export.load(path)
                meta.update(json.loads(notes_path.read_text()))
                meta["program"] = f"shared: {name}"
                return ep
            except Exception:  # torn or written by another torch: made again below
                path.unlink(missing_ok=True)
        notes: dict[str, Any] = {}
        ep = make(notes)
        meta.update(notes)
        try:
            with stage("save"):
                tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.pt2")
                torch.export.save(ep, tmp)
                tmp.replace(path)
                notes_path.write_text(json.dumps(notes))
            meta["program"] = f"made and shared: {name}"
        except Exception as exc:
            meta.setdefault("notes", []).append(f"program {name} not shared: {error_text(exc, 1)}")
        return ep


def flat_program(req: ExportRequest, dynamic: bool, meta: dict) -> Any:
    """``torch.export`` of the model with flat tuple outputs (``TorchOutputFlattening``), dynamic
    height and width when ``dynamic``, shared by the forms that lower from it.  Retried with
    size-oblivious reasoning when a size derived from height or width is 1 at some sizes only
    (``meta["size_oblivious"]`` then says so: lower it inside :func:`size_oblivious`)."""
    shape = "dynamic" if dynamic else f"static{req.export_size}"
    return shared_program(req, f"flat-{shape}", lambda notes: _flat_export(req, dynamic, notes), meta)


def _flat_export(req: ExportRequest, dynamic: bool, notes: dict) -> Any:
    shapes = torch_dynamic_shapes(req) if dynamic else None
    model = TorchOutputFlattening(req.module).eval()

    def export() -> Any:  # the same grad mode whichever form asks first: the same program
        with quiet(), stage("torch.export"), torch.enable_grad():
            return torch.export.export(model, tuple(req.example_inputs), dynamic_shapes=shapes)

    return size_oblivious_retry(dynamic, export, notes)


def size_oblivious_retry(dynamic: bool, attempt: Callable[[], T], notes: dict) -> T:
    """``attempt()``, and again inside :func:`size_oblivious` when ``torch.export`` pinned a size
    dim (a size derived from height or width is 1 at some sizes only); ``notes["size_oblivious"]``
    then says so.  When the notes already say so, one attempt, inside it."""
    if not notes.get("size_oblivious"):
        try:
            return attempt()
        except Exception as exc:
            if not (dynamic and is_dynamic_shape_error(exc)):
                raise
        notes["size_oblivious"] = True
    with size_oblivious():
        return attempt()


def inputs_at(req: ExportRequest, size: int) -> tuple[torch.Tensor, ...]:
    """The example inputs resized to ``size`` (bilinear on the size dims; others unchanged)."""
    out = []
    for x, dims in zip(req.example_inputs, sized_dims(req), strict=True):
        if not dims or size == req.export_size:
            out.append(x)
            continue
        hw = [size if d in dims else x.shape[d] for d in (2, 3)]
        out.append(F.interpolate(x, size=hw, mode="bilinear", align_corners=False).contiguous())
    return tuple(out)


def probe_sizes(req: ExportRequest) -> list[int]:
    """The sizes a one-for-all artifact is tried at during export: the extremes."""
    return sorted({s for s in (all_sizes(req)[0], all_sizes(req)[-1]) if s != req.export_size})


def check_sizes(
    req: ExportRequest, form: str, run: Callable[[tuple[torch.Tensor, ...]], Sequence[np.ndarray]]
) -> list[int]:
    """Run a one-for-all artifact at the extreme sizes; NeedsPerSize if it fails or its output
    shapes differ from eager's there.  Returns the sizes checked."""
    with stage("size check"):
        return _check_sizes(req, form, run)


def _check_sizes(
    req: ExportRequest, form: str, run: Callable[[tuple[torch.Tensor, ...]], Sequence[np.ndarray]]
) -> list[int]:
    checked = []
    for size in probe_sizes(req):
        xs = inputs_at(req, size)
        try:
            with torch.no_grad():
                ref = [tuple(t.shape) for t in flatten_outputs(req.module(*xs)).values()]
        except Exception as exc:
            raise ExportError(
                f"{form}: the eager model itself fails at {size} px ({error_text(exc, 2)}); "
                "remove that size from the model's sizes"
            ) from exc
        try:
            with quiet():  # runtimes log their own copy of the error to stderr
                got = [tuple(np.shape(a)) for a in run(xs)]
        except NeedsPerSize:
            raise
        except Exception as exc:  # the runtime's own error is the reason
            raise NeedsPerSize(
                f"{form}: the artifact exported at {req.export_size} px does not run at {size} px: "
                f"{error_text(exc)}; export one artifact per size"
            ) from exc
        if got != ref:
            raise NeedsPerSize(
                f"{form}: the artifact exported at {req.export_size} px returns shapes {got} at {size} px, "
                f"eager returns {ref} (sizes baked into the graph); export one artifact per size"
            )
        checked.append(size)
    return checked


def _describe(exc: BaseException) -> str:
    # ExportErrors raised by the forms already carry the converters' summarized messages
    return str(exc) if isinstance(exc, ExportError) else error_text(exc)


_SHAPE_ERRORS = ("Constraints violated", "specialized it to be a constant", "ConstraintViolation")


def is_dynamic_shape_error(exc: BaseException) -> bool:
    """torch.export's own verdict that the graph cannot keep the size dims dynamic."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if any(k in str(cur) or k in type(cur).__name__ for k in _SHAPE_ERRORS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def export_with_size_fallback(
    req: ExportRequest, form: str, attempt: Callable[[bool], T], hint: str
) -> tuple[T, bool]:
    """``attempt(dynamic)`` once for all sizes when wanted, else at the export size.

    If the all-sizes attempt fails, the fixed-size attempt decides: it works -> NeedsPerSize
    (the failure is about dynamic shapes), it fails too -> ExportError with its message.
    Returns (result, dynamic).
    """
    if not wants_dynamic(req):
        try:
            return attempt(False), False
        except (NeedsPerSize, BackendUnavailable):
            raise
        except Exception as exc:
            raise ExportError(f"{form} export failed: {_describe(exc)}\n{hint}") from exc
    try:
        return attempt(True), True
    except (NeedsPerSize, BackendUnavailable):
        raise
    except Exception as exc:
        dyn_exc = exc
    if is_dynamic_shape_error(dyn_exc):  # no need to prove it with a fixed-size export
        raise NeedsPerSize(
            f"{form}: the graph cannot serve sizes {all_sizes(req)} from one artifact "
            f"({_describe(dyn_exc)}); export one artifact per size"
        ) from dyn_exc
    try:
        attempt(False)  # only to learn whether the failure is about dynamic shapes
    except Exception as exc:
        raise ExportError(f"{form} export failed (at a fixed size too): {_describe(exc)}\n{hint}") from exc
    raise NeedsPerSize(
        f"{form}: one artifact for sizes {all_sizes(req)} failed ({_describe(dyn_exc)}); "
        f"the fixed-size export works: export one artifact per size"
    ) from dyn_exc


def as_float32(a: Any) -> np.ndarray:
    """Outputs are compared as float32, as the torch forms' sessions return them."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().float().numpy()
    return np.asarray(a).astype(np.float32, copy=False)


def calibration_batches(req: ExportRequest, fixed: bool) -> tuple[list[tuple[torch.Tensor, ...]], str]:
    """Calibration inputs for int8 forms, plus a note when they had to be adapted.

    A fixed-size graph takes only export-size inputs: other sizes are resized to it.  With no
    calibration set at all, the example input is used (and said so).
    """
    batches = [tuple(b) for b in req.calibration]
    if not batches:
        return [
            tuple(req.example_inputs)
        ], "no calibration inputs given: calibrated on the example input only"
    if not fixed:
        return batches, ""
    want = [tuple(x.shape) for x in req.example_inputs]
    out, resized = [], 0
    for b in batches:
        if [tuple(x.shape) for x in b] == want:
            out.append(b)
            continue
        adapted = []
        for x, ref in zip(b, req.example_inputs, strict=True):
            if x.shape != ref.shape and x.dim() == 4 and x.is_floating_point():
                x = F.interpolate(x, size=tuple(ref.shape[-2:]), mode="bilinear", align_corners=False)
            adapted.append(x)
        out.append(tuple(adapted))
        resized += 1
    note = (
        f"{resized} calibration inputs resized to {req.export_size} px (fixed-size graph)" if resized else ""
    )
    return out, note


def checked_threads(threads: int | None) -> int | None:
    """The ``threads`` option of a form with its own runtime thread pool: None (the runtime's
    default) or a positive integer."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None (runtime default), got {threads!r}")
    return threads


def existing_path(artifact: Artifact, folder: bool = False) -> Path:
    """The artifact's file (or folder), refused with a clear error when it is gone."""
    path = Path(artifact.path)
    if not (path.is_dir() if folder else path.is_file()):
        raise SessionError(
            f"{path} does not exist; re-export the {artifact.variant} artifact "
            "(a cached one is rebuilt on the next run)"
        )
    return path


def checked_keep_fp32(paths: Any, form: str, quantizes: bool = True) -> tuple[str, ...]:
    """The ``keep_fp32`` option of an int8 form: module paths (``"backbone.0"``) left in fp32, with
    their children.  A list or tuple of non-empty strings; refused on forms that do not quantize."""
    if paths is None or paths == () or paths == []:
        return ()
    if not quantizes:
        raise ConfigError(f"{form} does not quantize: keep_fp32 applies to the int8 forms only")
    if isinstance(paths, str) or not isinstance(paths, list | tuple):
        raise ConfigError(f'keep_fp32 takes a list of module paths, e.g. ["backbone.0"], got {paths!r}')
    bad = [p for p in paths if not isinstance(p, str) or not p.strip() or p != p.strip()]
    if bad:
        raise ConfigError(f"keep_fp32: module paths must be non-empty strings, got {bad!r}")
    return tuple(dict.fromkeys(paths))


def check_module_paths(module: torch.nn.Module, paths: Sequence[str], option: str) -> None:
    """Every path names a submodule of ``module``; else an ExportError listing its top-level children."""
    known = {name for name, _ in module.named_modules() if name}
    missing = [p for p in paths if p not in known]
    if missing:
        top = [name for name, _ in module.named_children()]
        raise ExportError(
            f"{option} names {missing}, which {'is no submodule' if len(missing) == 1 else 'are no submodules'} "
            f"of the model (its top-level modules: {', '.join(top) or 'none'}); use nn.Module paths as "
            "model.named_modules() lists them"
        )
