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
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunelab.data import DataSpec
from tunelab.errors import SpecError
from tunelab.models import CNNSpec, CustomSpec, MLPSpec, ModelSpec, RNNSpec
from tunelab.search import SearchSpec, parse_duration, pbt_mutable
from tunelab.train import TrainSpec

__all__ = [
    "PER_MEMBER_PATHS",
    "CompressSpec",
    "ExperimentSpec",
    "format_validation_error",
    "load_spec",
    "parse_spec",
]

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


_Ratio = Annotated[float, Field(gt=0.0, le=1.0)]
_Sparsity = Annotated[float, Field(ge=0.0, lt=1.0)]
_Batch = Annotated[int, Field(ge=1, le=65_536)]
QuantChoice = Literal["none", "dynamic", "static"]
QUANT_CHOICES: tuple[QuantChoice, ...] = ("none", "dynamic", "static")


class CompressSpec(BaseModel):
    """How ``tunelab compress`` (or a spec's ``compress:`` section, after the refit) searches for a smaller,
    faster model than the winner.

    ``max_drop``: how much validation score the pick may lose against the winner, in points of a score in
    [0, 1] (accuracy, f1, r2: 1.0 = 0.01) and in percent of the winner's value for an unbounded one (rmse,
    mae, loss). ``prefer``: the pick is the fastest (latency at the largest batch) or the smallest model
    within ``max_drop``. ``batches``: the batch sizes latency is measured at (the largest is the throughput
    batch). ``runtime``: where latency is measured, the runtime the model is exported for. The rest is the
    search space: ``widths`` (slimming ratios of every hidden layer; 1.0 keeps the structure),
    ``sparsities`` (magnitude sparsity, reported as a size reduction of the deflated file only),
    ``quantization`` (int8 modes of onnxruntime), ``distill`` (whether the teacher's outputs may guide
    fine-tuning), ``max_epochs`` (of fine-tuning, searched from 1).
    """

    model_config = ConfigDict(extra="forbid")

    budget: str | float = "10m"
    max_drop: float = Field(1.0, ge=0.0, lt=100.0, allow_inf_nan=False)
    prefer: Literal["latency", "size"] = "latency"
    batches: list[_Batch] = Field(default_factory=lambda: [1, 256], min_length=1, max_length=4)
    threads: int = Field(1, ge=1, le=256)
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    widths: list[_Ratio] = Field(default_factory=lambda: [1.0, 0.75, 0.5, 0.375, 0.25], min_length=1)
    sparsities: list[_Sparsity] = Field(default_factory=lambda: [0.0, 0.5, 0.8], min_length=1)
    quantization: list[QuantChoice] = Field(default_factory=lambda: list(QUANT_CHOICES), min_length=1)
    distill: bool = True
    max_epochs: int = Field(8, ge=1, le=1000)
    seed: int = Field(0, ge=0)

    @field_validator("budget")
    @classmethod
    def _a_duration(cls, value: str | float) -> str | float:
        parse_duration(value, what="compress.budget")
        return value

    @property
    def budget_seconds(self) -> float:
        return parse_duration(self.budget, what="compress.budget")

    @property
    def throughput_batch(self) -> int:
        return max(self.batches)


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
    # What `tunelab tune` does with its winner after the refit: a compression search (`tunelab compress`).
    compress: CompressSpec | None = None

    @model_validator(mode="after")
    def _no_teacher_here(self) -> ExperimentSpec:
        if self.train.distill is not None:
            raise ValueError(
                "train.distill needs a teacher's outputs, which `tunelab train` and `tunelab tune` do not "
                "have: distillation runs in `tunelab compress` (or a spec's compress: section), which "
                "distills the tuned winner into smaller models. Remove train.distill."
            )
        return self

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
