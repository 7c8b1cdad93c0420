"""Class labels and preview metadata of the Core ML image form's packages.

A classifier package needs one unique label per class (its probability dictionary is keyed by
label): ImageNet's 1000 names or Pascal VOC's 21 when the class count says so (from
torchvision's weight metadata, no download), else ``class_0``...  Xcode's model preview reads
the preview type and, for segmenters, the labels from the package's user-defined metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from parbench.errors import SessionError

LABEL_NAME = "classLabel"  # ClassifierConfig's predicted feature; the dict is LABEL_NAME + "_probs"
PROBS_NAME = LABEL_NAME + "_probs"
PREVIEW_TYPE = "com.apple.coreml.model.preview.type"
PREVIEW_PARAMS = "com.apple.coreml.model.preview.params"


def imagenet_labels() -> list[str] | None:
    """The 1000 ImageNet class names torchvision ships with its weight metadata (no download)."""
    try:
        from parbench.zoo.torchvision_shim import import_torchvision

        return list(import_torchvision().models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    except Exception:
        return None


def voc_labels() -> list[str] | None:
    """The 21 Pascal VOC class names of torchvision's segmentation weights (no download)."""
    try:
        from parbench.zoo.torchvision_shim import import_torchvision

        seg = import_torchvision().models.segmentation
        return list(seg.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1.meta["categories"])
    except Exception:
        return None


def class_labels(n: int, task: str) -> tuple[list[str], str]:
    """Deterministic, unique labels for n classes and where they came from."""
    labels, source = None, "generic"
    if task == "classification" and n == 1000:
        labels, source = imagenet_labels(), "imagenet (torchvision weights meta)"
    elif task == "segmentation" and n == 21:
        labels, source = voc_labels(), "pascal voc (torchvision weights meta)"
    if not labels or len(labels) != n:
        labels, source = [f"class_{i}" for i in range(n)], "generic"
    return unique(labels), source


def unique(labels: Sequence[str]) -> list[str]:
    """Labels made unique (a classifier's dictionary is keyed by label): repeats get ' (2)', ..."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def package_labels(spec: Any) -> list[Any]:
    """The class labels of a saved classifier's ``classify`` op (an ML program spec), in order."""
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                if op.type != "classify":
                    continue
                arg = op.inputs["classes"].arguments[0]
                values = arg.value.immediateValue.list.values
                labels: list[Any] = []
                for v in values:
                    t = v.immediateValue.tensor
                    which = t.WhichOneof("value")
                    labels.extend(t.strings.values if which == "strings" else getattr(t, which).values)
                return labels
    raise SessionError("the Core ML package has no classify op; re-export it with a classifier")


def preview_type(task: str, is_classifier: bool) -> str | None:
    """Xcode's preview for the package: an image classifier, an image segmenter, or none."""
    if is_classifier:
        return "imageClassifier"
    if task == "segmentation":
        return "imageSegmenter"
    return None


def preview_metadata(task: str, is_classifier: bool, segmentation_labels: Sequence[str]) -> dict[str, str]:
    """The user-defined metadata entries Xcode's preview reads."""
    md: dict[str, str] = {}
    if kind := preview_type(task, is_classifier):
        md[PREVIEW_TYPE] = kind
    if segmentation_labels:
        md[PREVIEW_PARAMS] = json.dumps({"labels": list(segmentation_labels)})
    return md
