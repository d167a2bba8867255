"""The search-space language: what a study may vary, as a mapping from dotted spec paths to nodes.

YAML form (the ``search.space`` section of an experiment spec)::

    train.lr: {float: [1e-4, 3e-2], log: true}       # real number, sampled in log space
    train.weight_decay: {float: [0.0, 0.1], step: 0.01}
    train.batch_size: {choice: [32, 64, 128]}         # one of a list (strings, numbers, booleans, null)
    train.optimizer: {choice: [adam, sgd, rmsprop]}
    train.momentum: {float: [0.5, 0.99], when: {train.optimizer: sgd}}  # only where optimizer == sgd
    train.nesterov: {choice: [true, false], when: {train.optimizer: [sgd, rmsprop]}}   # a list means "any of"
    model.n_layers: {int: [1, 3]}                     # whole number, both ends included
    model.widths: {per_layer: model.n_layers, int: [64, 512], log: true}   # a list of n_layers values
    model.hidden_units: {int: [16, 256], step: 16}
    train.epochs: 20                                  # a plain value (or list) is fixed
    model.extra: {fixed: {activation: gelu}}          # a fixed mapping needs the explicit form

Rules:

- Keys are dotted paths into the experiment spec; :meth:`SearchSpace.sample` returns the nested override dict
  (``{"train": {"lr": ...}, "model": {...}}``) to merge into the spec with :func:`merge_overrides`.
- A node has exactly one kind (``float``, ``int``, ``choice``, ``fixed``) plus that kind's options (``log``,
  ``step``) and the modifiers ``when`` and ``per_layer``. Unknown keys are errors, with a did-you-mean.
- ``when: {a: x, b: [y, z]}`` makes a node active iff ``a == x`` and ``b`` is ``y`` or ``z``; ``a`` and ``b``
  must be choice, int or fixed parameters of the same space, and the values must be ones they can take. An
  inactive node is left out of the overrides, so the spec's own default applies.
- ``per_layer: n`` (``n`` an int parameter) suggests ``<path>_0 .. <path>_{n-1}`` and yields the list.
- Optuna sees every node as its real distribution (``trial.suggest_*``), named by its dotted path.
- Numbers may be written ``1e-4``: PyYAML reads that as a string, and numeric strings are accepted in ranges.

Python form: ``SearchSpace({"train.lr": Float(1e-4, 3e-2, log=True), "train.epochs": 20, ...})``.
"""

from tunelab.search.space._nodes import Choice, Fixed, Float, Int, Node
from tunelab.search.space._overrides import merge_overrides
from tunelab.search.space._space import SearchSpace, nest

__all__ = ["Choice", "Fixed", "Float", "Int", "Node", "SearchSpace", "merge_overrides", "nest"]
