"""The model spec: one pydantic model per family, discriminated on ``type``.

Specs are plain data, validated once at the boundary; building a module from one is ``build_model``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
    "Activation",
    "AnyModelSpec",
    "CNNSpec",
    "CustomSpec",
    "EnsembleSpec",
    "InitScheme",
    "MLPSpec",
    "ModelSpec",
    "RNNSpec",
    "TextSpec",
    "canonical_init_scheme",
    "carried_model_fields",
    "parse_model_spec",
]

Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "elu", "selu", "silu"]
InitScheme = Literal["default", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "orthogonal"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)

# PyTorch names He initialization after Kaiming He; accept both spellings, store one.
_INIT_ALIASES = {"kaiming_uniform": "he_uniform", "kaiming_normal": "he_normal"}
# `type: lstm` in YAML is shorthand for `type: rnn, cell: lstm`; `type: linear` for `type: mlp, hidden: []`.
_TYPE_ALIASES = {"lstm": "rnn", "gru": "rnn", "linear": "mlp"}
# The fields each shorthand sets.
_IMPLIED_FIELDS: dict[str, dict[str, Any]] = {
    "lstm": {"cell": "lstm"},
    "gru": {"cell": "gru"},
    "linear": {"hidden": []},
}

Width = Annotated[int, Field(ge=1)]
DropoutRate = Annotated[float, Field(ge=0.0, lt=1.0)]


def canonical_init_scheme(value: Any) -> Any:
    """Map an init-scheme alias (kaiming_normal) to its stored name (he_normal); others pass through."""
    if isinstance(value, str):
        return _INIT_ALIASES.get(value, value)
    return value


class _SpecBase(BaseModel):
    """Weight-init fields every built-in family shares (see ``tunelab.models.init``)."""

    model_config = ConfigDict(extra="forbid")

    # The fields members of one fused population may hold each their own values of: the dropout rate (a
    # per-member vector there) and the initialization (spent once the weights exist). Every other field shapes
    # the layers, so members share it. The one definition of that fact for models.
    PER_MEMBER_FIELDS: ClassVar[frozenset[str]] = frozenset({"dropout", "init", "init_gain"})

    init: InitScheme = "default"
    init_gain: float = Field(1.0, gt=0.0, allow_inf_nan=False)

    @field_validator("init", mode="before")
    @classmethod
    def _init_alias(cls, value: Any) -> Any:
        return canonical_init_scheme(value)


class _FeedForwardSpec(_SpecBase):
    """Fields the feed-forward families (MLP, CNN) share: activation and per-block regularization."""

    activation: Activation = "relu"
    dropout: DropoutRate = 0.0
    batch_norm: bool = False


class _WindowFields(BaseModel):
    """How a model reads a forecasting window ``(L, F)`` (the series itself is its first feature).

    ``lags``: only the last ``lags`` steps of each window are read (None: all ``L``), so one set of windows
    serves every window length a search tries. ``normalize="last"``: each window is shifted by its last row
    (every feature) and the series' last value is added back to every output, so the network predicts the
    change from the last observation rather than the level: a trend or a level outside the training range
    extrapolates. Both need sequence input; a model that uses either is built as a ``WindowedModel``.
    """

    model_config = ConfigDict(extra="forbid")

    lags: int | None = Field(None, ge=1, le=100_000)
    normalize: Literal["none", "last"] = "none"

    @property
    def windowed(self) -> bool:
        """Whether the model reads its windows through a ``WindowedModel`` (``lags`` or ``normalize``)."""
        return self.lags is not None or self.normalize != "none"


class MLPSpec(_FeedForwardSpec, _WindowFields):
    """A multilayer perceptron on the flattened sample: ``[Linear -> BatchNorm -> act -> Dropout]*n, Linear``.

    ``hidden`` lists the widths of the hidden layers; an empty list is a linear model (``type: linear`` is
    shorthand for it). On forecasting windows ``lags`` and ``normalize`` apply (``_WindowFields``).
    """

    type: Literal["mlp"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [128, 64])

    @model_validator(mode="before")
    @classmethod
    def _expand_linear(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("type") != "linear":
            return data
        if data.get("hidden"):
            raise ValueError(
                "type 'linear' is shorthand for type 'mlp' with no hidden layer, but hidden "
                f"{data['hidden']} was also given. Use type 'mlp' with those hidden widths, or drop "
                "the hidden field."
            )
        return {**data, "type": "mlp", "hidden": []}


class CNNSpec(_FeedForwardSpec):
    """A convolutional network on ``(C, H, W)`` images, then a dense head.

    Each entry of ``channels`` is one block ``Conv2d(k, 'same') -> BatchNorm -> act -> Dropout -> 2x2 pool``;
    ``dense`` lists the head's hidden widths (its blocks share the conv blocks' settings). ``global_pool``
    averages each channel over space instead of flattening, which makes the head independent of the image
    size.
    """

    type: Literal["cnn"] = "cnn"
    channels: list[Width] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: int = Field(3, ge=1)
    pool: Literal["max", "avg", "none"] = "max"
    dense: list[Width] = Field(default_factory=lambda: [128])
    global_pool: bool = False

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd so that 'same' padding keeps the image size; got {value}. "
                f"Use {value - 1} or {value + 1}."
            )
        return value


class RNNSpec(_SpecBase, _WindowFields):
    """A recurrent network on (L, F) sequences: ``nn.RNN``/``LSTM``/``GRU``, pooled over time, then Linear.

    ``pooling="last"`` reads the output at the last time step (bidirectional: the forward direction's last
    step and the backward direction's first step, i.e. each direction's final state); ``"mean"`` averages all
    steps.
    ``dropout`` applies between stacked layers, so it needs ``n_layers >= 2``. On forecasting windows ``lags``
    and ``normalize`` apply (``_WindowFields``).
    """

    type: Literal["rnn"] = "rnn"
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    hidden_size: int = Field(64, ge=1)
    n_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    dropout: DropoutRate = 0.0
    pooling: Literal["last", "mean"] = "last"

    @model_validator(mode="before")
    @classmethod
    def _expand_type_alias(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("type") not in ("lstm", "gru"):
            return data
        cell = data["type"]
        if data.get("cell", cell) != cell:
            raise ValueError(
                f"type '{cell}' is shorthand for type 'rnn' with cell '{cell}', but cell '{data['cell']}' "
                f"was also given. Use type 'rnn' with cell '{data['cell']}', or drop the cell field."
            )
        return {**data, "type": "rnn", "cell": cell}

    @model_validator(mode="after")
    def _dropout_needs_layers(self) -> RNNSpec:
        if self.dropout > 0 and self.n_layers < 2:
            raise ValueError(
                f"dropout={self.dropout} applies between stacked recurrent layers, but n_layers=1 has none. "
                "Set n_layers >= 2, or dropout to 0."
            )
        return self


TextEncoder = Literal["bag", "cnn", "lstm", "gru"]
TextPooling = Literal["mean", "max", "mean_max", "weighted"]


class TextSpec(_SpecBase):
    """A model for token-id texts (``TextInput``): embed, encode, pool over the real tokens, dense head.

    ``encoder``:

    - ``"bag"``: a bag of embeddings (fastText-like): the embeddings pooled by ``pooling``, word order lost;
    - ``"cnn"``: one ``Conv1d`` per width in ``kernel_sizes`` (``channels`` filters each) over the embeddings,
      ``activation``, then max over time, concatenated (Kim 2014); ``pooling`` does not apply;
    - ``"lstm"`` / ``"gru"``: a recurrent layer (``hidden_size``, ``n_layers``, ``bidirectional``) whose
      outputs are pooled by ``pooling``.

    ``pooling`` is masked: only real tokens count, and an empty text pools to zeros. ``"weighted"`` is a mean
    weighted by a learned positive weight per token id (``token_log_weight``, its logarithm), which starts at
    the id's inverse document frequency in the training texts (``TextInput.inverse_document_frequency``):
    TF-IDF's weighting, learned on from there (rare words count more than "the" and "of").

    The pooled vector, with the table features after it, passes ``Dropout(dropout)``, the ``dense`` blocks
    (``Linear -> activation -> Dropout``) and a final ``Linear``.

    ``ngrams=2`` (bag only) adds each pair of adjacent tokens, hashed into ``buckets`` rows of a second
    embedding table, to the bag (fastText's bigrams: some word order at a bag's cost).

    ``vocab_size`` is the number of embedding rows: None keeps the data's whole vocabulary; a smaller value
    keeps the first (most frequent) ids and reads every other id as the unknown token, so a search can tune
    it without re-tokenizing; a larger value is capped at the data's. ``pretrained`` names a word-vector file
    in the text format (``token v1 ... vD`` per line, an optional first line ``count D``, e.g. GloVe or
    fastText ``.vec``) whose vectors replace the random rows of the tokens it has; ``freeze_embedding`` then
    keeps the embedding table fixed during training.

    ``max_length`` reads only the first ``max_length`` tokens of each text (None: all the data's), so the
    length, like the vocabulary, is searchable on one tokenization.
    """

    type: Literal["text"] = "text"
    encoder: TextEncoder = "bag"
    embedding_dim: Width = 64
    ngrams: Literal[1, 2] = 1
    buckets: int = Field(65536, ge=1, le=10_000_000)
    vocab_size: int | None = Field(None, ge=2)
    max_length: int | None = Field(None, ge=1)
    kernel_sizes: list[Width] = Field(default_factory=lambda: [3, 4, 5], min_length=1)
    channels: Width = 64
    hidden_size: Width = 64
    n_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    pooling: TextPooling = "mean"
    dense: list[Width] = Field(default_factory=list)
    activation: Activation = "relu"
    dropout: DropoutRate = 0.0
    pretrained: str | None = None
    freeze_embedding: bool = False

    @field_validator("kernel_sizes")
    @classmethod
    def _distinct_kernel_sizes(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(
                f"kernel_sizes must list distinct convolution widths; got {value}. Remove the repeated "
                f"widths: {sorted(set(value))}."
            )
        return value

    @field_validator("pretrained")
    @classmethod
    def _pretrained_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "pretrained must be the path of a word-vector file (e.g. 'glove.6B.100d.txt'); got an "
                "empty string. Give the path, or leave pretrained out for randomly initialized embeddings."
            )
        return value

    @model_validator(mode="after")
    def _weighted_unigrams(self) -> TextSpec:
        if self.pooling == "weighted" and self.encoder == "bag" and self.ngrams == 2:
            raise ValueError(
                "pooling 'weighted' learns a weight per vocabulary token, and hashed bigrams (ngrams=2) have "
                "none; use ngrams=1 with it, or pooling 'mean', 'max' or 'mean_max' with bigrams."
            )
        return self

    @model_validator(mode="after")
    def _freeze_needs_pretrained(self) -> TextSpec:
        if self.freeze_embedding and self.pretrained is None:
            raise ValueError(
                "freeze_embedding=True keeps pretrained word vectors fixed, but no pretrained file is given: "
                "the embeddings would stay random. Set pretrained to a word-vector file, or "
                "freeze_embedding to false."
            )
        return self


class CustomSpec(BaseModel):
    """A user's model: ``factory`` is an import string ``"package.module:function"`` (or ``:Class``).

    The factory is called as ``factory(input_shape=..., output_dim=..., **kwargs)`` when it accepts those two
    arguments, else as ``factory(**kwargs)``, and must return an ``nn.Module``. It is imported at build time.
    """

    model_config = ConfigDict(extra="forbid")

    # Its kwargs may set any layer's shape: all of it is structure.
    PER_MEMBER_FIELDS: ClassVar[frozenset[str]] = frozenset()

    type: Literal["custom"] = "custom"
    factory: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("factory")
    @classmethod
    def _import_string_form(cls, value: str) -> str:
        module, sep, attribute = value.partition(":")
        if not sep or not _is_dotted_name(module) or not _is_dotted_name(attribute):
            raise ValueError(
                f"factory must be an import string 'package.module:function', e.g. 'mypkg.nets:make_net'; "
                f"got {value!r}. Put a colon between the module path and the function's name."
            )
        return value

    @field_validator("kwargs")
    @classmethod
    def _no_reserved_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted({"input_shape", "output_dim"} & value.keys())
        if reserved:
            raise ValueError(
                f"kwargs must not set {reserved}: tunelab passes input_shape and output_dim from the data. "
                "Remove them from kwargs."
            )
        return value


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _model_type(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return _TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else None


ModelSpec = Annotated[
    Annotated[MLPSpec, Tag("mlp")]
    | Annotated[CNNSpec, Tag("cnn")]
    | Annotated[RNNSpec, Tag("rnn")]
    | Annotated[TextSpec, Tag("text")]
    | Annotated[CustomSpec, Tag("custom")],
    Discriminator(
        _model_type,
        custom_error_type="invalid_model_type",
        custom_error_message=(
            "model type must be one of 'mlp', 'cnn', 'rnn', 'text', 'custom' (shorthands: 'linear' for an "
            "mlp without hidden layers, 'lstm' and 'gru' for an rnn with that cell)"
        ),
    ),
]
"""Any model spec; pydantic picks the family from ``type``."""


class EnsembleSpec(BaseModel):
    """Models trained apart, whose outputs are averaged with ``weights`` (normalized to sum to 1).

    ``combine="probabilities"`` averages class probabilities (soft voting: softmax, or the sigmoid of a single
    logit) and outputs the log of the average, so that a softmax (or sigmoid) of the output is the average;
    ``"mean"`` averages the outputs (regression, forecasts). ``tunelab tune`` delivers one when the top
    candidates together beat the single winner on validation. An experiment's ``model`` is never an ensemble:
    the members are trained one by one, each as its own model.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["ensemble"] = "ensemble"
    members: list[ModelSpec] = Field(min_length=1)
    weights: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]]
    combine: Literal["probabilities", "mean"]

    @model_validator(mode="after")
    def _one_weight_per_member(self) -> EnsembleSpec:
        if len(self.weights) != len(self.members):
            raise ValueError(
                f"an ensemble needs one weight per member; got {len(self.weights)} weights for "
                f"{len(self.members)} members"
            )
        return self


_SHARED_FIELDS = frozenset({"init", "init_gain", "lags", "normalize"})
_FAMILIES: dict[str, type[BaseModel]] = {
    "mlp": MLPSpec,
    "cnn": CNNSpec,
    "rnn": RNNSpec,
    "text": TextSpec,
    "custom": CustomSpec,
}


def carried_model_fields(base: Mapping[str, Any], new_type: Any) -> dict[str, Any]:
    """The fields of the model mapping ``base`` that a model of type ``new_type`` (shorthands too) keeps.

    A search that chooses ``model.type`` may switch families. Within a family every field carries over but
    those the shorthand sets itself (``hidden`` for ``linear``, ``cell`` for ``lstm``); across families only
    the fields whose meaning the families share (``init``, ``init_gain``, ``lags``, ``normalize``), and the
    others start from the new family's defaults. An unknown type keeps ``base`` as it is, for validation to
    report.
    """
    target = _TYPE_ALIASES.get(new_type, new_type) if isinstance(new_type, str) else None
    family = _FAMILIES.get(target) if target is not None else None
    if family is None:
        return dict(base)
    implied = _IMPLIED_FIELDS.get(new_type, {})
    same = _model_type(dict(base)) == target
    return {
        key: value
        for key, value in base.items()
        if key in family.model_fields
        and key != "type"
        and key not in implied
        and (same or key in _SHARED_FIELDS)
    }


AnyModelSpec = Annotated[
    Annotated[ModelSpec, Tag("model")] | Annotated[EnsembleSpec, Tag("ensemble")],
    Discriminator(lambda value: "ensemble" if _model_type(value) == "ensemble" else "model"),
]
"""A ``ModelSpec`` or an ``EnsembleSpec`` of them: what a model is built or exported from."""

_ADAPTER: TypeAdapter[AnyModelSpec] = TypeAdapter(AnyModelSpec)


def parse_model_spec(data: Mapping[str, Any]) -> AnyModelSpec:
    """Validate a mapping (from YAML, a sampled config or an export) as a ``ModelSpec`` or an
    ``EnsembleSpec``; raises pydantic's error."""
    return _ADAPTER.validate_python(dict(data))
