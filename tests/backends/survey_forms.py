"""Survey: export every converter-based form of zoo models, run them, compare with eager.

Not a test (no ``test_`` prefix): a script that prints and records real figures -- export time,
whether one artifact serves every size, the errors against eager at each size::

    .venv/bin/python tests/backends/survey_forms.py --models mobilenet_v2 --sizes 256 400

One JSON line per model x form goes to ``--out``.  Core ML packages run on the reference
executor off macOS.  Slow (minutes per model on two cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from parbench import zoo
from parbench._util.console import error_text
from parbench.backends import get_backend
from parbench.backends.base import ExportRequest, flatten_outputs
from parbench.errors import ExportError, NeedsPerSize

# survey row name -> (variant, options)
FORMS: dict[str, tuple[str, dict]] = {
    "onnx": ("onnx", {}),
    "quantized_int8": ("quantized_int8", {}),
    "executorch_fp32": ("executorch_fp32", {}),
    "executorch_int8": ("executorch_int8", {}),
    "coreml_fp16": ("coreml_fp16", {}),
    "coreml_fp16_export": ("coreml_fp16", {"frontend": "torch.export"}),
    "coreml_fp32": ("coreml_fp32", {}),
}


def metrics(a: np.ndarray, r: np.ndarray) -> dict[str, float]:
    a64, r64 = a.astype(np.float64).ravel(), r.astype(np.float64).ravel()
    na, nr = np.linalg.norm(a64), np.linalg.norm(r64)
    out = {
        "max_abs": float(np.max(np.abs(a64 - r64))),
        "rel_l2": float(np.linalg.norm(a64 - r64) / max(nr, 1e-12)),
        "cosine": float(a64 @ r64 / (na * nr)) if na and nr else float(na == nr),
    }
    if a.ndim == 2:
        out["top1"] = float(np.mean(a.argmax(1) == r.argmax(1)))
    return out


def survey(model: str, forms: list[str], sizes: list[int], tmp: Path) -> list[dict]:
    spec = zoo.registry()[model]
    module = zoo.load_model(spec)
    export_size = spec.example_size
    example = tuple(torch.from_numpy(v) for v in zoo.example_inputs(spec, export_size).values())
    cases = {s: zoo.example_inputs(spec, s) for s in sizes}
    with torch.no_grad():
        golden = {
            s: flatten_outputs(module(*[torch.from_numpy(v) for v in cases[s].values()])) for s in sizes
        }
    names = list(golden[sizes[0]])
    rows = []
    for form in forms:
        variant, options = FORMS[form]
        backend = get_backend(variant, **options)
        row: dict = {"model": model, "form": form, "sizes": sizes}

        def request(size: int, per_size: bool) -> ExportRequest:
            ex = (
                example
                if size == export_size
                else tuple(torch.from_numpy(v) for v in zoo.example_inputs(spec, size).values())
            )
            return ExportRequest(
                module=module,
                spec=spec,
                example_inputs=ex,
                export_size=size,
                sizes=sizes,
                per_size=per_size,
                calibration=zoo.calibration_inputs(spec, export_size),
                output_names=names,
            )

        artifacts = {}
        t0 = time.perf_counter()
        try:
            try:
                art = backend.export(request(export_size, False), tmp / f"{model}-{form}")
                artifacts = {s: art for s in sizes}
                row["mode"] = "one artifact"
            except NeedsPerSize as exc:
                row["needs_per_size"] = str(exc)[:600]
                row["mode"] = "per size"
                for s in sizes:
                    artifacts[s] = backend.export(request(s, True), tmp / f"{model}-{form}-{s}")
            row["export_seconds"] = round(time.perf_counter() - t0, 2)
            row["meta"] = artifacts[sizes[0]].meta
            row["bytes"] = artifacts[sizes[0]].bytes
            results = {}
            for s in sizes:
                session = backend.load(artifacts[s])
                t1 = time.perf_counter()
                out = session.run(cases[s])
                results[s] = {
                    "run_s": round(time.perf_counter() - t1, 3),
                    "executor": session.executor,
                    **{k: metrics(out[k], golden[s][k].numpy()) for k in names},
                }
            row["results"] = results
            row["status"] = "ok"
        except ExportError as exc:
            row.update(
                status="export_error",
                error=str(exc)[:1500],
                export_seconds=round(time.perf_counter() - t0, 2),
            )
        except Exception as exc:  # a crash is a finding too; record it with its traceback
            row.update(status="crash", error=error_text(exc), trace=traceback.format_exc()[-2000:])
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2"])
    ap.add_argument("--forms", nargs="+", default=list(FORMS))
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 400])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            rows = survey(model, args.forms, sorted(args.sizes), Path(tmp))
            if args.out:
                with open(args.out, "a") as f:
                    for r in rows:
                        f.write(json.dumps(r, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
