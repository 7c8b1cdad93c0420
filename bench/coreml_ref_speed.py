"""Speed of the Core ML reference executor against eager PyTorch fp32 (same thread count).

Converts each model to an ML program (fp16 and fp32 compute precision), runs it with
``parbench.coreml_ref.MLModel`` and prints milliseconds per run (median of timed rounds after
warm-up) next to eager fp32, and the ratio.  Target: executor / eager < 2.

    .venv/bin/python bench/coreml_ref_speed.py [--size 256] [--threads 1] [--rounds 10]
        [--models mobilenet_v2,deeplabv3_mobilenet_v3_large,resnet50,tiny_vit,animegan]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_MODELS = "mobilenet_v2,deeplabv3_mobilenet_v3_large,resnet50,tiny_vit,animegan"


def _time_interleaved(fns: dict[str, Any], rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median ms per call of each fn; rounds alternate between the fns, so load from other
    processes on a shared machine hits them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn()
            samples[k].append((time.perf_counter_ns() - t0) / 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--precisions", default="fp16,fp32")
    ap.add_argument("--workdir", default=None, help="where converted packages go (default: a temp dir)")
    args = ap.parse_args()

    from support.coreml_models import convert, make_model

    from parbench.coreml_ref import MLModel

    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="coreml_ref_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size
    rows = []
    print(f"threads={torch.get_num_threads()} size={size} rounds={args.rounds} workdir={work}")
    for name in args.models.split(","):
        model = make_model(name, size=min(size, 128))
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        fns: dict[str, Any] = {"eager": lambda m=model, x=x: m(x)}
        models: dict[str, tuple[Any, float, float]] = {}
        for prec in args.precisions.split(","):
            pkg = work / f"{name}_{prec}_{size}.mlpackage"
            conv_s = 0.0
            if not pkg.exists():
                t0 = time.perf_counter()
                convert(model, x, pkg, precision=prec, target="iOS16")
                conv_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ml = MLModel(pkg)
            models[prec] = (ml, time.perf_counter() - t0, conv_s)
            feed = {ml.input_names[0]: x.numpy()}
            fns[prec] = lambda ml=ml, feed=feed: ml.predict(feed)
        with torch.inference_mode():
            ms = _time_interleaved(fns, args.rounds)
            e = model(x)
        e = (e[0] if isinstance(e, tuple) else e).numpy().astype(np.float64).ravel()
        for prec, (ml, load_s, conv_s) in models.items():
            out = next(iter(ml.predict({ml.input_names[0]: x.numpy()}).values()))
            o = out.astype(np.float64).ravel()
            cos = float(np.dot(o, e) / (np.linalg.norm(o) * np.linalg.norm(e)))
            ratio = ms[prec] / ms["eager"]
            rows.append((name, prec, ms["eager"], ms[prec], ratio, ml.n_ops, load_s, conv_s, cos))
            print(
                f"{name:30s} {prec}  eager {ms['eager']:8.2f} ms  executor {ms[prec]:8.2f} ms  "
                f"ratio {ratio:5.2f}  ({ml.n_ops} ops, load {load_s:.2f}s, convert {conv_s:.1f}s, "
                f"cosine vs eager {cos:.6f})",
                flush=True,
            )
    print()
    print(
        f"| model | precision | eager fp32 ms | executor ms | ratio |  (size {size}, threads {args.threads})"
    )
    print("|---|---|---:|---:|---:|")
    for name, prec, e, r, ratio, *_ in rows:
        print(f"| {name} | {prec} | {e:.2f} | {r:.2f} | {ratio:.2f} |")
    worst = max(r[4] for r in rows)
    print(f"\nworst ratio {worst:.2f} (target < 2.0): {'OK' if worst < 2.0 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
