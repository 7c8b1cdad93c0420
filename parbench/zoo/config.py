"""User models from a TOML file: the entries (validated by :mod:`parbench.records.config`) become
model specs whose factories import now, so a bad entry stops the run before any work, naming the
model and the key."""

from __future__ import annotations

import sys
from pathlib import Path

from parbench.errors import ConfigError
from parbench.records import config as records_config
from parbench.zoo.spec import InputSpec, ModelSpec


def parse_config(path: Path | str) -> list[ModelSpec]:
    """The `[models.NAME]` tables of a parbench TOML file, or `[tool.parbench.models.NAME]` of a
    pyproject.toml, as model specs."""
    path = Path(path)
    entries = records_config.read(path)
    # user factories usually live next to the config
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    specs = [to_spec(name, entry, path) for name, entry in entries.items()]
    for spec in specs:
        spec.resolve_factory()  # import errors surface now, naming the model and the key
    return specs


def to_spec(name: str, entry: records_config.UserModelEntry, path: Path) -> ModelSpec:
    where = f"model {name!r} in {path.name}"
    weights = None
    if entry.weights is not None:
        weights = (path.parent / entry.weights).resolve()
        if not weights.is_file():
            raise ConfigError(f"{where}: key 'weights' = {entry.weights!r}: no such file ({weights})")
    extra = {}
    if entry.mean is not None:
        extra["mean"] = tuple(entry.mean)
    if entry.std is not None:
        extra["std"] = tuple(entry.std)
    return ModelSpec(
        name=name,
        task=entry.task,
        factory=entry.factory,
        sizes=tuple(entry.sizes),
        example_size=entry.example_size or entry.sizes[0],
        inputs=tuple(InputSpec(i.name, tuple(i.shape), i.dtype) for i in entry.inputs),
        tiers=frozenset({"user"}),
        weights=weights,
        tolerances=entry.tolerances,
        known_failures=dict(entry.known_failures),
        options={
            v: {k: tuple(x) if isinstance(x, list) else x for k, x in opts.items()}
            for v, opts in entry.options.items()
        },
        description=entry.description,
        source=str(path),
        **extra,
    )
