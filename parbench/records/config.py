"""A user model entry: ``[models.NAME]`` in a parbench TOML file, or ``[tool.parbench.models.NAME]``
in a pyproject.toml (README "Your own models").

:func:`read` returns the entries by name; turning an entry into a runnable model spec (importing
its factory, resolving paths) is the zoo's job.  Errors name the file, the model and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from parbench.errors import ConfigError
from parbench.records.ids import MAX_SIZE, MIN_SIZE, VariantName, check_model_name

TASKS = ("classification", "segmentation", "image-to-image", "detection", "generic")
Task = Literal["classification", "segmentation", "image-to-image", "detection", "generic"]
Size = int
OptionValue = bool | int | float | str | list[str]  # a form's option (get_backend keyword argument)


class InputEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    shape: list[Any] = Field(
        min_length=1,
        description='dimensions: positive integers or "size"',
        json_schema_extra={"items": {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "size"}]}},
    )
    dtype: Literal["float32", "int64", "int32"] = "float32"

    @field_validator("shape")
    @classmethod
    def _dims(cls, v: list[Any]) -> list[int | str]:
        if not all((isinstance(d, int) and not isinstance(d, bool) and d > 0) or d == "size" for d in v):
            raise ValueError('dimensions must be positive integers or "size"')
        return v


class UserModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factory: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="'package.module:function' returning an nn.Module",
    )
    task: Task = "generic"
    sizes: list[Size] = Field(default_factory=lambda: [256], min_length=1)
    example_size: int | None = Field(None, ge=MIN_SIZE, description="default: the first size")
    inputs: list[InputEntry] = Field(
        default_factory=lambda: [InputEntry(name="image", shape=[1, 3, "size", "size"])]
    )
    weights: str | None = Field(None, description="a state-dict file, relative to the TOML file")
    mean: list[float] | None = None
    std: list[float] | None = None
    tolerances: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="by variant or family: metric -> threshold"
    )
    known_failures: dict[str, str] = Field(default_factory=dict, description="variant -> reason")
    options: dict[VariantName, dict[str, OptionValue]] = Field(
        default_factory=dict,
        description='by variant: the form\'s options, e.g. [models.X.options.executorch_int8] keep_fp32 = ["backbone.0"]',
    )
    description: str = ""

    @field_validator("sizes")
    @classmethod
    def _sizes_in_range(cls, v: list[int]) -> list[int]:
        if any(not MIN_SIZE <= s <= MAX_SIZE for s in v):
            raise ValueError(f"sizes must be integers {MIN_SIZE}..{MAX_SIZE}")
        return v

    @model_validator(mode="after")
    def _unique_inputs(self) -> UserModelEntry:
        if len({i.name for i in self.inputs}) != len(self.inputs):
            raise ValueError("'inputs' has duplicate names")
        return self


def _explain(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    key = loc[0] if loc else ""
    path = key + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
    if err.get("type") == "extra_forbidden":
        return f"{where}: unknown key {path!r}; known keys: {sorted(UserModelEntry.model_fields)}"
    if err.get("type") == "missing":
        hint = ' (e.g. factory = "my_pkg.nets:build")' if key == "factory" else ""
        return f"{where}: missing key {path!r}{hint}"
    return f"{where}: key {path!r}: {err.get('msg', 'invalid')} (got {err.get('input')!r})"


def parse_entry(name: str, raw: Any, origin: str) -> UserModelEntry:
    where = f"model {name!r} in {origin}"
    check_model_name(name, where)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table [models.{name}]")
    try:
        return UserModelEntry.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, where)) from None


def read(path: Path | str) -> dict[str, UserModelEntry]:
    """The model entries of a parbench TOML file or a pyproject.toml (the reader)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parbench config {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"parbench config {str(path)!r} is not valid TOML: {exc}") from exc
    if path.name == "pyproject.toml" or "tool" in data:
        data = data.get("tool", {}).get("parbench", {})
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(
            f"parbench config {str(path)!r} defines no models: add a [models.NAME] table "
            "(or [tool.parbench.models.NAME] in pyproject.toml)"
        )
    return {name: parse_entry(name, entry, path.name) for name, entry in models.items()}


def declares_models(pyproject: Path) -> bool:
    """True when a pyproject.toml has ``[tool.parbench.models.*]`` tables."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return bool(data.get("tool", {}).get("parbench", {}).get("models"))
