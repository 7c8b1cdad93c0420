"""Helpers of the device-runner tests: a tiny fixture set written by hand from
docs/fixture-format.md (two models, .pt and .ptl, inputs and golden outputs)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from support.nets import TinyClassifier, TinySegmenter

from parbench.backends.base import flatten_outputs

SIZES = (16, 24)


MODELS = {
    "tiny_cls": ("classification", TinyClassifier, ["output_0", "output_1"], {16: 2, 24: 1}),
    "tiny_seg": ("segmentation", TinySegmenter, ["out", "aux"], {16: 1, 24: 1}),
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_tiny_set(root: Path) -> dict:
    """Writes two small models as .pt and .ptl with inputs and golden outputs; returns the manifest.

    Golden outputs come from a float64 copy of each model (rounded to float32), so the runner's
    float32 outputs differ from them by a few ulps and every metric has a non-trivial value.
    """
    torch.manual_seed(0)
    tensors: dict[str, dict] = {}
    models: dict[str, dict] = {}

    def put(rel: str, arr: np.ndarray) -> str:
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        tensors[rel] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "sha256": _sha(data)}
        return rel

    for name, (task, cls, outputs, cases_per_size) in MODELS.items():
        module = cls().eval()
        module64 = cls().eval()
        module64.load_state_dict(module.state_dict())
        module64 = module64.double()
        example = torch.randn(1, 3, SIZES[0], SIZES[0])
        traced = torch.jit.trace(module, example, strict=False)
        art_dir = root / "artifacts" / name
        art_dir.mkdir(parents=True, exist_ok=True)
        traced.save(str(art_dir / "torchscript.pt"))
        traced._save_for_lite_interpreter(str(art_dir / "lite.ptl"))
        artifacts = {}
        for variant, fname, fmt in (("torchscript", "torchscript.pt", "pt"), ("lite", "lite.ptl", "ptl")):
            data = (art_dir / fname).read_bytes()
            artifacts[variant] = [
                {
                    "path": f"artifacts/{name}/{fname}",
                    "format": fmt,
                    "sha256": _sha(data),
                    "bytes": len(data),
                    "sizes": None,
                    "meta": {},
                }
            ]
        cases = []
        for size in SIZES:
            for index in range(cases_per_size[size]):
                x = torch.randn(1, 3, size, size)
                with torch.no_grad():
                    golden = flatten_outputs(module64(x.double()))
                assert list(golden) == outputs
                case_id = f"{name}/{size}/{index}"
                stem = f"tensors/{name}/{size}-{index}"
                cases.append(
                    {
                        "id": case_id,
                        "size": size,
                        "index": index,
                        "inputs": {"image": put(f"{stem}.input.image.bin", x.numpy())},
                        "golden": {
                            k: put(f"{stem}.golden.{k}.bin", v.float().numpy()) for k, v in golden.items()
                        },
                    }
                )
        models[name] = {
            "task": task,
            "spec_hash": _sha(name.encode()),
            "example_size": SIZES[0],
            "inputs": [{"name": "image", "shape": [1, 3, "size", "size"], "dtype": "float32"}],
            "outputs": list(golden),
            "artifacts": artifacts,
            "cases": cases,
        }
    manifest = {
        "format": "parbench-fixtures",
        "format_version": 1,
        "created_utc": "2026-11-23T12:00:00Z",
        "generator": {"parbench": "0.1.0", "torch": torch.__version__},
        "tensors": tensors,
        "models": models,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


@dataclass
class LiveCollector:
    url: str
    token: str
    store_path: Path


def copy_set(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
