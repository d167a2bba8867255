"""Model families and the builder that makes a seeded ``nn.Module`` from a spec.

``build_model(spec, input_shape=, output_dim=, seed=)`` builds one of:

- ``MLPSpec`` (``type: mlp``): ``nn.Sequential`` over the flattened sample, any input kind;
- ``CNNSpec`` (``type: cnn``): ``nn.Sequential`` of conv blocks and a dense head, images ``(C, H, W)``;
- ``RNNSpec`` (``type: rnn``, or ``lstm`` / ``gru``): a ``SequenceModel``, sequences ``(L, F)``;
- ``TextSpec`` (``type: text``): a ``TextModel`` (embeddings, a bag / TextCNN / LSTM / GRU encoder pooled over
  the real tokens, a dense head) for text samples, whose layout ``build_model(..., text=TextInput)`` gives;
- on forecasting windows an MLP (``type: linear`` is one without hidden layers) or RNN may read only the last
  ``lags`` steps and predict changes from the last value (``normalize: last``): a ``WindowedModel`` around it;
- ``CustomSpec`` (``type: custom``): a user's factory named by an import string, any input kind;
- ``EnsembleSpec`` (``type: ensemble``): an ``Ensemble`` of models of those families, their outputs averaged
  (probabilities for classifiers: ``combine_outputs``). Exports describe one; an experiment's model never is.

MLP and CNN models contain only standard torch layers in the order ``Linear/Conv2d -> BatchNorm -> activation
-> Dropout`` (a CNN block with ReLU / LeakyReLU and max-pooling runs ``Conv2d -> BatchNorm -> Dropout ->
pool -> activation``, the same function), which lets ``tunelab.fused`` convert them layer by layer. Their
dropout is ``ByteDropout``, an ``nn.Dropout`` whose mask is drawn from random bytes (much cheaper on a CPU;
the rate is rounded to 1/256). Weight-init schemes live in ``tunelab.models.init``.
"""

from tunelab.models._build import build_model
from tunelab.models._dropout import ByteDropout, byte_dropout_rate
from tunelab.models._ensemble import (
    Combine,
    Ensemble,
    average_terms,
    combine_outputs,
    combine_rule,
    member_terms,
    terms_output,
)
from tunelab.models._rnn import SequenceModel
from tunelab.models._signature import count_parameters, structure_signature
from tunelab.models._specs import (
    ACTIVATIONS,
    INIT_SCHEMES,
    AnyModelSpec,
    CNNSpec,
    CustomSpec,
    EnsembleSpec,
    MLPSpec,
    ModelSpec,
    RNNSpec,
    TextSpec,
    carried_model_fields,
    parse_model_spec,
)
from tunelab.models._text import TextModel
from tunelab.models._window import WindowedModel
from tunelab.models.init import init_weights

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
    "AnyModelSpec",
    "ByteDropout",
    "CNNSpec",
    "Combine",
    "CustomSpec",
    "Ensemble",
    "EnsembleSpec",
    "MLPSpec",
    "ModelSpec",
    "RNNSpec",
    "SequenceModel",
    "TextModel",
    "TextSpec",
    "WindowedModel",
    "average_terms",
    "build_model",
    "byte_dropout_rate",
    "carried_model_fields",
    "combine_outputs",
    "combine_rule",
    "count_parameters",
    "init_weights",
    "member_terms",
    "parse_model_spec",
    "structure_signature",
    "terms_output",
]
