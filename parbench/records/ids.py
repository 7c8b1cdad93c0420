"""Names and keys: one rule for model and variant names, one parser for test ids.

A case is ``model x variant x size``; its id is ``MODEL-VARIANT-SIZE`` (``MyNet2-onnx-256``), the
pytest parameter id in ``test_parity[...]`` and ``test_latency[...]``.  Names therefore never hold
``-`` (nor ``[`` or ``]``): model names are letters, digits, ``_`` and ``.`` and start with a letter
(``MyNet2``, ``mobilenet_v2``); variant names are lower case (``coreml_fp16``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated

from pydantic import StringConstraints

from parbench.errors import ConfigError

MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.]{0,63}$"
VARIANT_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
MIN_SIZE, MAX_SIZE = 8, 8192

ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]
VariantName = Annotated[str, StringConstraints(pattern=VARIANT_NAME_PATTERN)]

_MODEL_RE = re.compile(MODEL_NAME_PATTERN)
_VARIANT_RE = re.compile(VARIANT_NAME_PATTERN)
_ID_RE = re.compile(
    r"(?:^|\[)(?P<model>[A-Za-z][A-Za-z0-9_.]*)-(?P<variant>[a-z][a-z0-9_]*)-(?P<size>\d+)\]?$"
)


def check_model_name(name: str, where: str = "") -> str:
    if not isinstance(name, str) or not _MODEL_RE.match(name):
        raise ConfigError(
            f"{where + ': ' if where else ''}model name {name!r} is not allowed: use letters, "
            "digits, '_' and '.', starting with a letter, at most 64 characters (e.g. MyNet2)"
        )
    return name


def check_variant_name(name: str, where: str = "") -> str:
    if not isinstance(name, str) or not _VARIANT_RE.match(name):
        raise ConfigError(
            f"{where + ': ' if where else ''}variant name {name!r} is not allowed: use lower-case "
            "letters, digits and '_' (e.g. coreml_fp16)"
        )
    return name


@dataclasses.dataclass(frozen=True, order=True)
class CaseKey:
    """One case: model x variant x size."""

    model: str
    variant: str
    size: int

    @property
    def id(self) -> str:
        return f"{self.model}-{self.variant}-{self.size}"

    def __str__(self) -> str:
        return self.id

    @classmethod
    def parse(cls, text: str) -> CaseKey | None:
        """The key in a test id (``MyNet2-onnx-256``) or a test name (``test_latency[MyNet2-onnx-256]``,
        a node id ending in it); None when ``text`` holds none."""
        m = _ID_RE.search(text or "")
        if m is None:
            return None
        return cls(m["model"], m["variant"], int(m["size"]))
