"""``SpecPopulation``: K trial configurations of one structure, trained as one fused population.

The bridge between the search's configurations (a ``ModelSpec`` and a ``TrainSpec`` per member) and
:class:`~tunelab.fused.PopulationTrainer`. It builds each member's model with ``build_model`` seeded by
``train.seed``, as the sequential search does, maps every per-member field of the ``TrainSpec`` to a ``[K]``
hyperparameter, and draws the single-model :class:`~tunelab.train.Trainer`'s own batches, so that a member
trained here follows the trajectory of the same configuration trained alone (docs/FUSED.md, the correctness
bar).

What is a member's own: the fields ``TrainSpec.PER_MEMBER_FIELDS`` and a model spec's ``PER_MEMBER_FIELDS``
name (lr and its schedule, evaluated per member with :func:`~tunelab.train.lr_at`, plateau state included;
weight decay on weights only, as :func:`~tunelab.train.penalized_parameters` decides; momentum, betas, eps,
L1, label smoothing, gradient-clip norm, early stopping; dropout rate and init). Everything else is the
population's *structure*, shared: layer shapes, optimizer family, batch size, epochs, loss, training seed
(hence batch order and initial weights), augmentation, device, CUDA graphs.

For population-based training, :meth:`exploit` copies one member over another and :meth:`set_member` gives a
member new per-member values mid-training.

For checkpoints, :meth:`state` takes the training state of some members (plain tensors and values) and
:meth:`load_state` puts it into a population built afresh of those members' specs (with
:meth:`resume_mutable`), which then trains on as the saved one would have.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tunelab.errors import SpecError
from tunelab.execute._pop_optimizer import make_population_optimizer, optimizer_hparams
from tunelab.fused import Population, PopulationTrainer, member_loss
from tunelab.inputs import TextInput
from tunelab.models import CNNSpec, MLPSpec, ModelSpec, TextSpec, build_model
from tunelab.train import (
    PER_STEP_SCHEDULES,
    EarlyStopping,
    MonitorState,
    PlateauState,
    RunLength,
    TrainSpec,
    augment_images,
    batch_bounds,
    compute_metrics,
    lr_at,
    resolve_device,
    resolve_loss,
    resolve_metrics,
    update_plateau,
)

__all__ = ["SHARED_TRAIN_FIELDS", "SpecPopulation", "fusible_loss_reason"]

# TrainSpec fields every member of a population must share: all but the per-member ones.
SHARED_TRAIN_FIELDS = tuple(
    name for name in TrainSpec.model_fields if name not in TrainSpec.PER_MEMBER_FIELDS
)
# A rate only used to give a member the Dropout modules of the others; its real rate is set right after.
_PLACEHOLDER_DROPOUT = 0.5
_MIN_EVAL_BATCH = 1024  # as the single trainer evaluates


def fusible_loss_reason(task: str, loss: str) -> str | None:
    """Why the population trainer cannot train this task/loss (it has cross-entropy and MSE), or None."""
    family = "classification" if task == "classification" else "regression"
    resolved = resolve_loss(task, loss)
    supported = "cross_entropy" if family == "classification" else "mse"
    if resolved != supported:
        return f"loss '{resolved}' has no population form (fused populations train {supported} for {task})"
    return None


class SpecPopulation:
    """K configurations of one structure on one data set, trained epoch by epoch as one population.

    ``models`` and ``trains`` hold one spec per member; their structure must agree (pack them by
    :func:`tunelab.search._packing.pack_key`). ``input_shape`` / ``output_dim`` / ``task`` / ``n_classes`` /
    ``target_scale`` are what the single trainer gets from the data bundle. Members keep their slot order;
    :meth:`remove` drops members in place.

    ``mutable``: per-member spec paths that may change later through :meth:`set_member` (PBT's). A population
    is built with only the machinery its members use, so for ``model.dropout`` it then gets Dropout modules
    (at rate 0 where a member has none: the same results) and for ``train.weight_decay`` the weights/others
    optimizer groups, even when no member uses them yet.

    Per epoch: :meth:`train_epoch` (the trainer's permutation of the training rows, the learning rate of each
    member's schedule before every step), then :meth:`evaluate` (one batched pass: ``loss`` and
    ``val_<metric>`` per member), then :meth:`end_epoch` (early stopping and plateau state per member).
    """

    def __init__(
        self,
        models: Sequence[ModelSpec],
        trains: Sequence[TrainSpec],
        *,
        input_shape: tuple[int, ...],
        output_dim: int,
        task: str,
        text: TextInput | None = None,
        n_classes: int | None = None,
        target_scale: tuple[Tensor, Tensor] | None = None,
        mutable: Collection[str] = (),
    ) -> None:
        if not models or len(models) != len(trains):
            raise SpecError(
                f"a population needs one model and one train spec per member; got {len(models)} "
                f"and {len(trains)}"
            )
        first = trains[0]
        for index, train in enumerate(trains[1:], start=1):
            name = _unshared_field(train, first)
            if name is not None:
                raise SpecError(
                    f"member {index} has train.{name}={getattr(train, name)!r} but member 0 has "
                    f"{getattr(first, name)!r}; members of one population share "
                    f"{', '.join(SHARED_TRAIN_FIELDS)}."
                )
        reason = fusible_loss_reason(task, first.loss)
        if reason is not None:
            raise SpecError(f"cannot train this configuration as a population: {reason}.")
        if first.amp:
            raise SpecError(
                "amp (a shared gradient scaler) would couple members; train fused populations without amp."
            )
        self.task = task
        self.models = list(models)
        self.trains = list(trains)
        self.n_classes = n_classes
        self.metrics = resolve_metrics(task, first.metrics)
        self.device = resolve_device(first.device)
        self.target_scale = (
            None if target_scale is None else tuple(t.to(self.device, torch.float32) for t in target_scale)
        )
        built = _with_common_dropout(models, always="model.dropout" in mutable)
        population = Population.from_modules(
            [
                build_model(spec, input_shape=input_shape, output_dim=output_dim, seed=train.seed, text=text)
                for spec, train in zip(built, trains, strict=True)
            ],
            seed=first.seed,
        ).to(self.device)
        # What set_member may change: Dropout modules exist; weight decay has its weights-only group.
        self._dropout_modules = any(isinstance(m, _DROPOUT_FAMILIES) and m.dropout > 0 for m in built)
        self._decay_groups = "train.weight_decay" in mutable or any(t.weight_decay > 0 for t in trains)
        population.set_dropout_rate(torch.tensor([_dropout(spec) for spec in models], dtype=torch.float64))
        self.trainer = PopulationTrainer(
            population,
            make_population_optimizer(population, self.trains, grouped="train.weight_decay" in mutable),
            task="classification" if task == "classification" else "regression",
            label_smoothing=[t.label_smoothing for t in self.trains],
            l1=[t.l1 for t in self.trains],
            clip_norm=[math.inf if t.grad_clip is None else t.grad_clip for t in self.trains],
            cuda_graphs="auto" if first.cuda_graphs else False,
        )
        # The single trainer's two streams from one seed: the first orders the batches (and augments).
        data_seed = int(np.random.SeedSequence(first.seed).generate_state(2)[0])
        self.generator = torch.Generator(device=self.device).manual_seed(data_seed)
        self.trackers = [_tracker(t) for t in self.trains]
        self.plateaus = [PlateauState() for _ in self.trains]
        self.epoch = 0
        self._length: RunLength | None = None  # the last epoch's, for the rate set_member gives a member

    @property
    def n_members(self) -> int:
        return self.trainer.n_members

    @property
    def alive(self) -> list[bool]:
        """Per member: False once its loss or gradient stopped being finite."""
        return [bool(a) for a in self.trainer.alive]

    # -- one epoch --
    def train_epoch(
        self, x: Tensor, y: Tensor, *, interrupt: Callable[[], bool] | None = None
    ) -> list[float] | None:
        """One pass over the training rows; each member's mean training loss (NaN once it diverged).

        ``interrupt`` is asked after every minibatch; when it answers True the epoch ends there and this
        returns None (the members' weights are then mid-epoch: for a trial that is being stopped)."""
        first = self.trains[0]
        n_rows = len(x)
        rows_per_step = first.rows_per_step(n_rows)
        length = RunLength(len(batch_bounds(n_rows, rows_per_step)), first.epochs)
        self._length = length
        self.epoch += 1
        first_step = (self.epoch - 1) * length.steps_per_epoch
        self._set_lr(first_step, length)

        def per_step_lr(i: int) -> None:  # the epoch's first rate is set above
            if i > 0:
                self._set_lr(first_step + i, length)

        per_step = any(t.schedule.name in PER_STEP_SCHEDULES for t in self.trains)
        augment = first.augment
        losses = self.trainer.fit_epoch(
            x,
            y,
            batch_size=rows_per_step,
            generator=self.generator,
            before_step=per_step_lr if per_step else None,
            transform=None
            if augment is None
            else partial(augment_images, spec=augment, generator=self.generator),
            interrupt=interrupt,
        )
        return None if losses is None else losses.tolist()

    def _set_lr(self, step: int, length: RunLength) -> None:
        rates = [
            lr_at(t.schedule, t.lr, step, length, n_reductions=p.n_reductions)
            for t, p in zip(self.trains, self.plateaus, strict=True)
        ]
        self.trainer.optimizer.set_hparam("lr", rates)

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, *, prefix: str = "val_") -> list[dict[str, float]]:
        """Every member on ``(x, y)`` in one batched pass: ``{prefix}loss`` (with its label smoothing, as the
        single trainer's) and ``{prefix}<metric>`` in original units, one dict per member."""
        population = self.trainer.population
        population.eval()
        batch = max(self.trains[0].batch_size, _MIN_EVAL_BATCH)
        outputs = torch.cat([population(x[s : s + batch]) for s in range(0, len(x), batch)], dim=1).float()
        population.train()
        smoothing = torch.tensor([t.label_smoothing for t in self.trains], dtype=torch.float64)
        losses = member_loss(
            outputs,
            y,
            task=self.trainer.task,
            label_smoothing=smoothing.to(self.device) if self.task == "classification" else None,
        ).tolist()
        target = y if self.task == "classification" else self._original_units(y)
        logs = []
        for k, loss in enumerate(losses):
            if self.task == "classification":
                prediction = torch.softmax(outputs[k], dim=1)
            else:
                prediction = self._original_units(outputs[k])
            values = compute_metrics(self.metrics, prediction, target, n_classes=self.n_classes)
            logs.append({f"{prefix}loss": loss, **{f"{prefix}{k_}": v for k_, v in values.items()}})
        return logs

    def _original_units(self, values: Tensor) -> Tensor:
        if self.target_scale is None:
            return values
        mean, std = self.target_scale
        return values * std + mean

    def end_epoch(self, logs: Sequence[dict[str, float]]) -> list[bool]:
        """Per member: update early stopping (and the plateau schedule) with its epoch logs; True where early
        stopping asks that member to stop."""
        stops = []
        for k, (train, member_logs) in enumerate(zip(self.trains, logs, strict=True)):
            stops.append(bool(self.trackers[k].on_epoch_end(self.epoch, dict(member_logs))))
            if train.schedule.name == "plateau":
                value = member_logs.get("val_loss", member_logs["loss"])
                self.plateaus[k] = update_plateau(
                    self.plateaus[k], value, epoch=self.epoch, patience=train.schedule.patience
                )
        return stops

    def best_epoch(self, k: int) -> int | None:
        """The epoch of member ``k``'s best monitored value so far (None before any improvement)."""
        return self.trackers[k].state.best_epoch

    def restores_best(self, k: int) -> bool:
        """Whether member ``k`` ends with its best epoch's weights (early stopping with ``restore_best``)."""
        es = self.trains[k].early_stopping
        return es is not None and es.restore_best and self.trackers[k].state.best_epoch is not None

    # -- membership --
    def remove(self, members: Sequence[int]) -> None:
        """Drop ``members`` (slot indices) in place; the others keep their order and carry on unchanged."""
        gone = set(members)
        keep = [k for k in range(self.n_members) if k not in gone]
        if not gone or not keep:
            return
        self.trainer.shrink(keep)
        self.models = [self.models[k] for k in keep]
        self.trains = [self.trains[k] for k in keep]
        self.trackers = [self.trackers[k] for k in keep]
        self.plateaus = [self.plateaus[k] for k in keep]

    # -- checkpoints --
    def state(self, members: Sequence[int] | None = None) -> dict[str, Any]:
        """The training state of ``members`` (slot indices; all by default), from which a population built
        afresh of their specs trains on as this one would have (:meth:`load_state`): ``{"shared": ...,
        "members": [one per member, in the order given]}``.

        Shared: the epoch, the run length, the device, the batch-order (and augmentation) stream, the
        trainer's step counts and dropout stream, and which optional machinery the population was built with
        (Dropout modules, weight-decay groups: :meth:`resume_mutable`). Per member: its weights and buffers,
        optimizer hyperparameters, step counter and state, regularization hyperparameters, status
        (``alive``, ``diverged_at_step``), and its early-stopping and plateau progress. Only tensors (each
        without the member dimension), numbers, strings, None, lists and dicts, so that ``torch.load(...,
        weights_only=True)`` reads it.

        The members draw their dropout masks as slices of one draw from one stream, so a population of
        fewer members than this one (a subset resumed) draws different masks for members with dropout from
        then on: exact continuation holds for the members without dropout, or for all the members resumed
        together in their order."""
        slots = list(range(self.n_members)) if members is None else list(members)
        length = None if self._length is None else [self._length.steps_per_epoch, self._length.n_epochs]
        return {
            "shared": {
                "device": str(self.device),
                "epoch": self.epoch,
                "length": length,
                "generator": self.generator.get_state(),
                "trainer": self.trainer.state(),
                "structure": {"dropout_modules": self._dropout_modules, "decay_groups": self._decay_groups},
            },
            "members": [
                {
                    "trainer": self.trainer.member_state(k),
                    "tracker": _monitor_to_dict(self.trackers[k].state),
                    "plateau": {
                        "monitor": _monitor_to_dict(self.plateaus[k].monitor),
                        "n_reductions": self.plateaus[k].n_reductions,
                    },
                }
                for k in slots
            ],
        }

    @staticmethod
    def resume_mutable(state: Mapping[str, Any]) -> list[str]:
        """The ``mutable`` paths that build a population of (some of) ``state``'s members with the machinery
        the saved population had (Dropout modules, weight-decay groups), so that :meth:`load_state` fits."""
        structure = state["shared"]["structure"]
        return [
            *(["model.dropout"] if structure["dropout_modules"] else []),
            *(["train.weight_decay"] if structure["decay_groups"] else []),
        ]

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state` (of as many members as this population has, built from their specs
        with :meth:`resume_mutable` among ``mutable``): the next :meth:`train_epoch` is the saved epoch's
        next. Random streams saved on another kind of device do not fit this one's generators: they are
        then left as built, and the members go on with other batch orders and dropout masks."""
        shared, members = state["shared"], list(state["members"])
        if len(members) != self.n_members:
            raise SpecError(f"the state holds {len(members)} members; this population has {self.n_members}")
        structure = {"dropout_modules": self._dropout_modules, "decay_groups": self._decay_groups}
        if dict(shared["structure"]) != structure:
            raise SpecError(
                f"the saved population was built with {dict(shared['structure'])}, this one with "
                f"{structure}; build it with SpecPopulation.resume_mutable(state) among mutable"
            )
        same_device = torch.device(shared["device"]).type == self.device.type
        self.trainer.load_member_states([member["trainer"] for member in members])
        self.trainer.load_state(shared["trainer"], random=same_device)
        if same_device:
            self.generator.set_state(shared["generator"].to("cpu", torch.uint8))
        for k, member in enumerate(members):
            self.trackers[k].state = _monitor_from_dict(member["tracker"])
            plateau = member["plateau"]
            self.plateaus[k] = PlateauState(
                _monitor_from_dict(plateau["monitor"]), int(plateau["n_reductions"])
            )
        self.epoch = int(shared["epoch"])
        length = shared["length"]
        self._length = None if length is None else RunLength(int(length[0]), int(length[1]))

    # -- population-based training --
    def exploit(self, src: int, dst: int) -> None:
        """PBT's exploit: member ``dst`` becomes a copy of member ``src``: weights, buffers, optimizer state
        and step counter, hyperparameters, early-stopping and plateau state, and configuration. The other
        members are not touched. Follow with :meth:`set_member` to give ``dst`` its explored values."""
        self.trainer.exploit(src, dst)
        self.models[dst], self.trains[dst] = self.models[src], self.trains[src]
        self.trackers[dst] = copy.deepcopy(self.trackers[src])
        self.plateaus[dst] = self.plateaus[src]  # an immutable NamedTuple

    def set_member(self, k: int, model: ModelSpec, train: TrainSpec) -> None:
        """Give member ``k`` the per-member values of ``model`` and ``train`` from its next step on: lr and
        its schedule, weight decay, momentum, betas, eps, L1, label smoothing, clip norm, dropout rate and the
        early-stopping settings. Its weights, optimizer state, and early-stopping and plateau progress stay
        as they are (after :meth:`exploit`, the source's). The structure must stay the population's.
        """
        if not 0 <= k < self.n_members:
            raise SpecError(f"member index {k} is outside 0..{self.n_members - 1}")
        reference = self.trains[k]  # shares these fields with every other member
        name = _unshared_field(train, reference)
        if name is not None:
            raise SpecError(
                f"member {k} cannot change train.{name} to {getattr(train, name)!r} during training: "
                f"members of one population share {', '.join(SHARED_TRAIN_FIELDS)} (the population "
                f"has {getattr(reference, name)!r})."
            )
        if _structure(model) != _structure(self.models[k]):
            raise SpecError(
                f"member {k} cannot change its model to {model!r} during training: only dropout and the "
                "initialization (unused once trained) may differ from the population's structure."
            )
        if train.weight_decay > 0 and not self._decay_groups:
            raise SpecError(
                f"member {k} cannot take weight_decay {train.weight_decay:g}: no member decayed when this "
                "population was built, so its optimizer would decay biases too; build it with "
                "mutable=['train.weight_decay']."
            )
        rate = _dropout(model)
        if rate > 0 and isinstance(model, _DROPOUT_FAMILIES) and not self._dropout_modules:
            raise SpecError(
                f"member {k} cannot take dropout {rate:g}: no member had dropout when this population was "
                "built, so it has no Dropout modules; build it with mutable=['model.dropout']."
            )
        self.trainer.set_hparams(
            {
                "lr": self._scheduled_lr(train, self.plateaus[k]),
                "weight_decay": train.weight_decay,
                **optimizer_hparams(train, train.optimizer),
                "label_smoothing": train.label_smoothing,
                "l1": train.l1,
                "clip_norm": math.inf if train.grad_clip is None else train.grad_clip,
                "dropout": rate,
            },
            members=[k],
        )
        tracker = _tracker(train)
        old = self.trackers[k]
        if (tracker.monitor, tracker.mode) == (old.monitor, old.mode):
            tracker.state = old.state  # the progress so far counts under the new patience
        self.models[k], self.trains[k], self.trackers[k] = model, train, tracker

    def _scheduled_lr(self, train: TrainSpec, plateau: PlateauState) -> float:
        """The rate ``train``'s schedule gives at the population's next step (its base rate before any
        epoch); :meth:`train_epoch` sets it again before that step."""
        if self._length is None:
            return train.lr
        step = self.epoch * self._length.steps_per_epoch
        return lr_at(train.schedule, train.lr, step, self._length, n_reductions=plateau.n_reductions)


def _structure(model: ModelSpec) -> dict[str, Any]:
    """A model spec without its per-member fields (dropout, init): what members of a population share."""
    return model.model_dump(exclude=set(model.PER_MEMBER_FIELDS))


def _unshared_field(train: TrainSpec, reference: TrainSpec) -> str | None:
    """The first of :data:`SHARED_TRAIN_FIELDS` on which ``train`` differs from ``reference``, or None."""
    return next((n for n in SHARED_TRAIN_FIELDS if getattr(train, n) != getattr(reference, n)), None)


def _monitor_to_dict(state: MonitorState) -> dict[str, Any]:
    return {"best": float(state.best), "best_epoch": state.best_epoch, "n_bad_epochs": state.n_bad_epochs}


def _monitor_from_dict(values: Mapping[str, Any]) -> MonitorState:
    best_epoch = values["best_epoch"]
    return MonitorState(
        float(values["best"]), None if best_epoch is None else int(best_epoch), int(values["n_bad_epochs"])
    )


def _tracker(train: TrainSpec) -> EarlyStopping:
    if train.early_stopping is None:  # track the best val_loss epoch, never stop (as the single trainer)
        return EarlyStopping("val_loss", patience=None)
    return EarlyStopping.from_spec(train.early_stopping)


# The families whose Dropout module exists only for a rate above zero (an RNN's dropout is a setting of its
# recurrent layer).
_DROPOUT_FAMILIES = (MLPSpec, CNNSpec, TextSpec)


def _dropout(spec: ModelSpec) -> float:
    return float(getattr(spec, "dropout", 0.0))


def _with_common_dropout(models: Sequence[ModelSpec], *, always: bool = False) -> list[ModelSpec]:
    """Models whose Dropout modules match: a rate of 0 builds no Dropout module, so when any member has
    dropout (or ``always``), members without it get a placeholder rate (their real rate, 0, is set on the
    population)."""
    if not always and not any(_dropout(spec) > 0 for spec in models):
        return list(models)
    return [
        spec.model_copy(update={"dropout": _PLACEHOLDER_DROPOUT})
        if isinstance(spec, _DROPOUT_FAMILIES) and spec.dropout == 0
        else spec
        for spec in models
    ]
