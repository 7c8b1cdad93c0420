"""Latency of the AnimeGAN-style generator at 256, 300, 400 and 640 px in every form, and how
latency grows from 256 to 640 px (published phone CPU figures: 2 s at 256, 9 s at 640).

    python bench/seed_table.py [--threads 1] [--min-time 1.0] [--variants eager,onnx,...]
    python bench/seed_table.py --from-json reports/bench/seed-animegan.json   # table only

It runs the bench suite (``pytest bench/ --models animegan --sizes 256,300,400,640``) in a
subprocess, writes its pytest-benchmark JSON (default ``reports/bench/seed-animegan-<UTC>.json``,
so ``parbench report`` picks it up too) and prints a Markdown table: one row per form, the
median ms (±IQR) per size, and the 640/256 ratio next to the pixel-count ratio (6.25).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from parbench.report.build import collect
from parbench.report.tables import VARIANT_ORDER

ROOT = Path(__file__).resolve().parents[1]

PHONE_MS = {256: 2000.0, 640: 9000.0}  # published phone CPU figures for this kind of generator


def run_bench(args: argparse.Namespace, out: Path) -> int:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench/",
        "--models",
        args.model,
        "--sizes",
        ",".join(map(str, args.sizes)),
        "--threads",
        str(args.threads),
        "--bench-min-time",
        str(args.min_time),
        f"--benchmark-json={out}",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    if args.variants:
        cmd += ["--variants", args.variants]
    print("running:", " ".join(cmd[2:]), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def table(json_path: Path, model: str, sizes: list[int]) -> str:
    rep = collect([json_path])
    s = rep.summary
    s = s[(s["model"] == model) & (s["kind"] == "host")]
    if s.empty:
        raise SystemExit(f"{json_path} has no results for {model}")
    lo, hi = min(sizes), max(sizes)
    head = ["form", *(f"{n} px" for n in sizes), f"{hi}/{lo}", "executor"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(sizes) + 1) + ["---"]) + "|",
    ]
    forms = sorted(s["form"].unique(), key=lambda f: VARIANT_ORDER.index(f) if f in VARIANT_ORDER else 99)
    for form in forms:
        fr = s[s["form"] == form].set_index("size")
        cells = []
        for n in sizes:
            if n in fr.index:
                r = fr.loc[n]
                cells.append(f"{r['median_ms']:.1f} ±{r['iqr_ms']:.1f}")
            else:
                cells.append("–")
        ratio = (
            f"{fr.loc[hi, 'median_ms'] / fr.loc[lo, 'median_ms']:.2f}×"
            if lo in fr.index and hi in fr.index
            else "–"
        )
        lines.append("| " + " | ".join([form, *cells, ratio, str(fr["executor"].iloc[0])]) + " |")
    phone = [f"{PHONE_MS[n]:.0f}" if n in PHONE_MS else "–" for n in sizes]
    lines.append(
        "| phone CPU (published) | " + " | ".join(phone) + f" | {PHONE_MS[640] / PHONE_MS[256]:.2f}× | – |"
    )
    threads = sorted({int(t) for t in s["threads"].dropna()})
    note = (
        f"\nHost: median ms ±IQR per run of `session.run` ({', '.join(map(str, threads))} thread(s), "
        f"{int(s['n_samples'].min())}–{int(s['n_samples'].max())} rounds per cell). "
        f"Pixel count grows {(hi / lo) ** 2:.2f}× from {lo} to {hi} px."
    )
    return "\n".join(lines) + "\n" + note


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="animegan")
    p.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[256, 300, 400, 640])
    p.add_argument("--variants", default=None, help="comma-separated forms (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed rounds per cell")
    p.add_argument("--from-json", type=Path, default=None, help="only print the table of an earlier run")
    p.add_argument("--out", type=Path, default=None, help="bench JSON to write")
    args = p.parse_args()
    if args.from_json:
        path = args.from_json
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = args.out or ROOT / "reports" / "bench" / f"seed-{args.model}-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        code = run_bench(args, path)
        if not path.exists():
            print(f"the bench run wrote no results (exit {code})", file=sys.stderr)
            return code or 1
    print()
    print(table(path, args.model, args.sizes))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
