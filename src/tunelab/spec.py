"""The experiment spec: one YAML file (or Python objects) saying what to train on what data, and how.

Validated once, here, at the boundary. Every problem becomes a :class:`~tunelab.errors.SpecError` whose
message names the place in the file, what was found, what was expected and how to fix it.

Example::

    name: digits-mlp
    data: {source: digits}
    model: {type: mlp, hidden: [256, 128], dropout: 0.1}
    train: {optimizer: adam, lr: 0.001, epochs: 30, early_stopping: {patience: 5}}
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunelab.data import DataSpec
from tunelab.errors import SpecError
from tunelab.models import CNNSpec, CustomSpec, MLPSpec, ModelSpec, RNNSpec
from tunelab.search import SearchSpec, pbt_mutable
from tunelab.train import TrainSpec

__all__ = ["PER_MEMBER_PATHS", "ExperimentSpec", "format_validation_error", "load_spec", "parse_spec"]

# Spec paths (and everything below them) that members of one fused population may hold each their own values
# of, from the spec classes' PER_MEMBER_FIELDS: the search packs trials that agree on every other parameter.
PER_MEMBER_PATHS: tuple[str, ...] = tuple(
    sorted(
        {
            f"model.{name}"
            for spec in (MLPSpec, CNNSpec, RNNSpec, CustomSpec)
            for name in spec.PER_MEMBER_FIELDS
        }
        | {f"train.{name}" for name in TrainSpec.PER_MEMBER_FIELDS}
    )
)


class ExperimentSpec(BaseModel):
    """What to train (model), on what (data), and how (train)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="experiment", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # The data seed: it fixes the split (the test part above all). Training randomness is train.seed, so a
    # study can vary the training seed while every candidate sees the same test part.
    seed: int = Field(default=0, ge=0)
    data: DataSpec
    model: ModelSpec = Field(default_factory=lambda: MLPSpec())
    train: TrainSpec = Field(default_factory=TrainSpec)
    # What `tunelab tune` varies and how it searches; `tunelab train` ignores it.
    search: SearchSpec | None = None

    @model_validator(mode="after")
    def _pbt_has_something_to_perturb(self) -> ExperimentSpec:
        if self.search is not None and self.search.scheduler.name == "pbt" and self.search.space:
            pbt_mutable(self.search.search_space(), PER_MEMBER_PATHS)  # raises SpecError, a ValueError
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_spec(mapping: Any, *, source: str = "the spec") -> ExperimentSpec:
    """Validate a mapping (from YAML or Python) into an :class:`ExperimentSpec`."""
    if not isinstance(mapping, dict):
        kind = "empty" if mapping is None else f"a {type(mapping).__name__}"
        raise SpecError(
            f"{source} must be a mapping of sections (name, data, model, train), but it is {kind}.\n"
            "A minimal spec is:\n  data: {source: digits}\n  model: {type: mlp}\n  train: {epochs: 10}"
        )
    try:
        return ExperimentSpec.model_validate(mapping)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source=source)) from None


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    if not path.exists():
        raise SpecError(
            f"spec file '{path}' does not exist. Check the path, or run `tunelab demo` for an example."
        )
    if path.is_dir():
        raise SpecError(f"'{path}' is a directory; expected a YAML spec file such as experiment.yaml.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read spec file '{path}': {err}. Expected a UTF-8 YAML text file.") from None
    if not text.strip():
        raise SpecError(
            f"spec file '{path}' is empty; expected at least a `data:` section, "
            "e.g. `data: {source: digits}`."
        )
    try:
        mapping = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError(
            f"spec file '{path}' is not valid YAML{where}: {problem}. "
            "Check indentation and that every `key: value` pair has a space after the colon."
        ) from None
    return parse_spec(mapping, source=f"spec file '{path}'")


def format_validation_error(err: ValidationError, *, source: str) -> str:
    """Turn pydantic's errors into lines that say where, what was found, what was expected, and a fix."""
    lines = [f"{source} has {err.error_count()} problem{'s' if err.error_count() != 1 else ''}:"]
    for item in err.errors(include_url=False):
        loc = _location(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_fields(err.title, item["loc"])
            hint = _did_you_mean(str(item["loc"][-1]), allowed)
            known = f" Known keys here: {', '.join(sorted(allowed))}." if allowed else ""
            lines.append(f"  - {loc}: unknown key.{hint}{known}")
        elif kind == "missing":
            lines.append(f"  - {loc}: required but missing.")
        else:
            given = item.get("input")
            shown = "" if isinstance(given, dict | list) else f" (got {given!r})"
            lines.append(f"  - {loc}: {item['msg']}{shown}.")
    return "\n".join(lines)


def _location(loc: tuple[Any, ...]) -> str:
    # pydantic puts the discriminator's tag (e.g. 'mlp') into the location of union members: drop it.
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in _UNION_TAGS)]
    return ".".join(parts) or "(top level)"


_UNION_TAGS = {"mlp", "cnn", "rnn", "custom", "lstm", "gru"}


def _allowed_fields(_title: str, loc: tuple[Any, ...]) -> list[str]:
    """The field names valid at the parent of ``loc`` (best effort: walks the spec's model classes)."""
    current: Any = ExperimentSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if isinstance(part, str) and part in _UNION_TAGS:
            current = _union_member(current, part)
        else:
            fields = getattr(_model_of(current), "model_fields", None)
            if not fields or part not in fields:
                return []
            current = fields[part].annotation
        if current is None:
            return []
    fields = getattr(_model_of(current), "model_fields", None)
    return list(fields) if fields else []


def _model_of(annotation: Any) -> Any:
    """The first pydantic model class inside an annotation (itself, or an arm of a union / Optional)."""
    for arg in _flatten_args(annotation):
        if issubclass(arg, BaseModel):
            return arg
    return None


def _union_member(union: Any, tag: str) -> Any:
    for arg in _flatten_args(union):
        fields = getattr(arg, "model_fields", None)
        if fields and "type" in fields and fields["type"].default == tag:
            return arg
    return None


def _flatten_args(annotation: Any) -> list[type]:
    out: list[type] = []
    stack = [annotation]
    while stack:
        item = stack.pop(0)
        if isinstance(item, type):
            out.append(item)
        stack.extend(getattr(item, "__args__", ()) or ())
    return out


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
