"""Fused populations: many configurations of one model structure trained as one batched model.

- :class:`Population` stacks K models of a tunelab family (MLP / CNN / RNN / bag text) into population layers;
  :class:`FunctionalPopulation` fuses any module with ``torch.func``; :func:`fuse` picks, :func:`can_fuse`
  says whether (and why not) up front.
- Vectorized optimizers with ``[K]`` hyperparameters: :class:`PopSGD`, :class:`PopAdam`, :class:`PopAdamW`,
  :class:`PopRMSprop`, :class:`PopAdagrad` (the update equations of their ``torch.optim`` namesakes).
- :class:`PopulationTrainer` trains, evaluates, shrinks, refills and exploits members in place, and takes and
  loads their state for checkpoints (:meth:`~PopulationTrainer.member_state`).

When fusion pays and the correctness bar (a member trained in a population matches the same config trained
alone): docs/FUSED.md in the repository.
"""

from tunelab.fused._base import BasePopulation, structural_signature
from tunelab.fused._functional import FunctionalPopulation, can_fuse, fuse
from tunelab.fused._layers import (
    PopActivation,
    PopBatchNorm,
    PopConv2d,
    PopDropout,
    PopFlatten,
    PopLayer,
    PopLinear,
    PopPool2d,
)
from tunelab.fused._loss import clip_grad_norm_per_member, l1_penalty, member_accuracy, member_loss
from tunelab.fused._optim_base import PopulationOptimizer
from tunelab.fused._optimizers import PopAdagrad, PopAdam, PopAdamW, PopRMSprop, PopSGD
from tunelab.fused._population import Population
from tunelab.fused._rnn import PopGRU, PopLSTM, PopRNN, PopSequencePooling
from tunelab.fused._text import PopEmbedding, PopTextBag
from tunelab.fused._trainer import PopulationTrainer

__all__ = [
    "BasePopulation",
    "FunctionalPopulation",
    "PopActivation",
    "PopAdagrad",
    "PopAdam",
    "PopAdamW",
    "PopBatchNorm",
    "PopConv2d",
    "PopDropout",
    "PopEmbedding",
    "PopFlatten",
    "PopGRU",
    "PopLSTM",
    "PopLayer",
    "PopLinear",
    "PopPool2d",
    "PopRMSprop",
    "PopRNN",
    "PopSGD",
    "PopSequencePooling",
    "PopTextBag",
    "Population",
    "PopulationOptimizer",
    "PopulationTrainer",
    "can_fuse",
    "clip_grad_norm_per_member",
    "fuse",
    "l1_penalty",
    "member_accuracy",
    "member_loss",
    "structural_signature",
]
