"""The single-model training engine: one readable loop over tensors resident on the device."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.errors import DataError, SpecError, TrainingError
from tunelab.layout import RunLayout
from tunelab.train._augment import augment_images
from tunelab.train._batches import batch_bounds
from tunelab.train._callbacks import Callback, EarlyStopping, History
from tunelab.train._checkpoint import CHECKPOINT_FORMAT, Checkpoint, load_checkpoint, save_checkpoint
from tunelab.train._device import (
    denormals_flushed,
    initial_rng_state,
    resolve_device,
    scoped_global_rng,
)
from tunelab.train._inputs import checked_labels, checked_pair, checked_target_scale, checked_targets
from tunelab.train._lbfgs import lbfgs_step
from tunelab.train._losses import (
    DistillLossFunction,
    LossFunction,
    Task,
    make_distill_loss,
    make_loss,
    output_dim_for,
    resolve_loss,
)
from tunelab.train._memory import keep_freed_memory
from tunelab.train._metrics import compute_metrics, metric_row_terms, resolve_metrics
from tunelab.train._monitor import MonitorState
from tunelab.train._optimizers import LBFGS_STEP, make_optimizer, penalized_parameters
from tunelab.train._schedules import PER_STEP_SCHEDULES, PlateauState, RunLength, lr_at, update_plateau
from tunelab.train._spec import TrainSpec

__all__ = ["Trainer"]

Tensors = tuple[torch.Tensor, torch.Tensor]
ScaleLike = float | Sequence[float] | torch.Tensor
# Spec fields that may change between a checkpoint and its resumption without changing the trajectory so far.
_RESUMABLE_CHANGES = frozenset({"epochs", "checkpoint_every", "device"})
_MIN_EVAL_BATCH = 1024


@dataclass
class _Run:
    """The loop's state between epochs; with the model, optimizer and RNGs it is what a checkpoint holds."""

    tracker: EarlyStopping
    history: History
    epoch: int = 0  # completed epochs
    plateau: PlateauState = field(default_factory=PlateauState)
    best_model: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class _Teacher:
    """A teacher's outputs for the training rows, on the device, and the distillation loss that reads them."""

    outputs: torch.Tensor  # float32 [N_train, *output]
    loss: DistillLossFunction

    def loss_for(self, rows: torch.Tensor) -> LossFunction:
        """The per-sample loss of a step on ``rows`` (indices into the training rows)."""
        loss, teacher = self.loss, self.outputs[rows]
        return lambda output, target: loss(output, target, teacher)


class Trainer:
    """Trains ``model`` for a ``task`` as ``spec`` says; ``fit`` / ``evaluate`` / ``predict``.

    ``n_classes`` (classification) defaults to ``max(y_train) + 1``. ``target_scale=(mean, std)``
    (regression) is how the targets were standardized: losses stay in standardized units, metrics and
    predictions are in the original units. With ``run_dir``, ``checkpoint.pt`` is written every
    ``spec.checkpoint_every`` epochs and at the end, and ``best.pt`` whenever the monitored value improves.

    Randomness comes from ``spec.seed`` alone: the batch order and augmentation from the trainer's generator,
    dropout from torch's global RNG, which ``fit`` seeds inside a scope and restores on exit.

    Distillation (``spec.distill``, a `DistillSpec`): ``fit(..., teacher=)`` takes the teacher's raw outputs
    on the training rows, float ``[N_train, output_dim]`` aligned with them (logits for classification; for
    regression and forecasting values in the standardized units the loss sees, i.e. a teacher `Trainer`'s
    :meth:`outputs`), and every step reads the teacher's rows with its targets' rows. The logged ``loss`` is
    then the mixed objective; ``val_loss`` and the metrics stay the plain loss on the labels. The teacher is
    required with ``spec.distill`` and refused without it; a resumed fit is given it again.

    Example::

        trainer = Trainer(model, TrainSpec(epochs=20), task="classification", n_classes=10)
        history = trainer.fit((X_train, y_train), (X_val, y_val))
        probabilities = trainer.predict(X_test)
    """

    def __init__(
        self,
        model: nn.Module,
        spec: TrainSpec,
        *,
        task: Task,
        n_classes: int | None = None,
        target_scale: tuple[ScaleLike, ScaleLike] | None = None,
        callbacks: Sequence[Callback] = (),
        run_dir: str | Path | None = None,
    ) -> None:
        self.spec = spec
        self.task = task
        self.loss_name = resolve_loss(task, spec.loss)
        self.loss_fn = make_loss(task, spec.loss, label_smoothing=spec.label_smoothing)
        self.metrics = resolve_metrics(task, spec.metrics)
        if n_classes is not None and (task != "classification" or n_classes < 2):
            raise SpecError(
                f"n_classes={n_classes} given for a {task} task; it must be >= 2, for classification"
            )
        self.n_classes = n_classes
        self.device = resolve_device(spec.device, amp=spec.amp)
        self.model = model.to(self.device)
        # Convolutions on the CPU run several times faster on channels-last tensors (oneDNN's native layout;
        # its pooling too): the weights are converted here, the images once per fit and each batch on use.
        self._channels_last = self.device.type == "cpu" and any(
            isinstance(m, nn.Conv2d) for m in self.model.modules()
        )
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stub
        self.optimizer = make_optimizer(self.model.parameters(), spec)
        self.callbacks = list(callbacks)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.history = History()
        self._target_scale = checked_target_scale(target_scale, task=self.task, device=self.device)
        self._l1_weights = penalized_parameters(self.model.parameters())[0] if spec.l1 else []
        self._scaler = torch.amp.GradScaler("cuda") if spec.amp else None
        # Two independent streams from one seed: data order/augmentation, and the model's own draws (dropout).
        data_seed, model_seed = (int(s) for s in np.random.SeedSequence(spec.seed).generate_state(2))
        self._generator = torch.Generator(device=self.device).manual_seed(data_seed)
        self._rng_state = initial_rng_state(model_seed, self.device)

    # ------------------------------------------------------------------ fit

    @denormals_flushed()
    def fit(
        self,
        train: Tensors,
        val: Tensors | None = None,
        *,
        resume_from: str | Path | None = None,
        teacher: torch.Tensor | None = None,
    ) -> History:
        """Train for ``spec.epochs`` epochs (or until a callback or early stopping stops it) and return the
        `History`. ``resume_from`` continues the run saved in that checkpoint exactly where it stopped (give
        the same ``teacher`` again). ``teacher``: with ``spec.distill`` only, the teacher's raw outputs on
        the rows of ``train``, float ``[N_train, output_dim]`` (``[N_train]`` for one output)."""
        spec = self.spec
        keep_freed_memory()  # once per process: a step's large tensors reuse the last step's pages
        X, y = self._checked_tensors(train, "train")
        X = self._laid_out(X)  # once, so that batches sliced from it already are
        val_data = self._checked_tensors(val, "val") if val is not None else None
        output_shape = self._check_fit(X, y)
        taught = self._checked_teacher(teacher, n_rows=len(X), output_shape=output_shape)
        run = self._new_run(has_val=val_data is not None)
        if resume_from is not None:
            self._restore(resume_from, run)
        self.history = run.history
        n_rows = len(X)
        bounds = batch_bounds(n_rows, spec.rows_per_step(n_rows))
        length = RunLength(len(bounds), spec.epochs)
        callbacks = [run.tracker, run.history, *self.callbacks]
        batch_hooks = [c for c in callbacks if type(c).on_batch_end is not Callback.on_batch_end]
        logs: dict[str, Any] = {}

        with scoped_global_rng(self._rng_state, self.device):
            begin = {
                "n_train": n_rows,
                "n_val": len(val_data[0]) if val_data is not None else 0,
                "epochs": spec.epochs,
                "steps_per_epoch": length.steps_per_epoch,
                "initial_epoch": run.epoch,
            }
            for callback in callbacks:
                callback.on_train_begin(dict(begin))
            for epoch in range(run.epoch + 1, spec.epochs + 1):
                started = time.perf_counter()
                lr = self._set_lr((epoch - 1) * length.steps_per_epoch, length, run.plateau.n_reductions)
                for callback in callbacks:
                    callback.on_epoch_begin(epoch, {"lr": lr})
                trained = self._train_epoch(
                    X, y, bounds, epoch, length, run.plateau.n_reductions, batch_hooks, taught
                )
                if trained is None:
                    run.history.interrupted_in = epoch
                    break
                loss, lr = trained
                train_seconds = time.perf_counter() - started
                logs = {"loss": loss}
                if val_data is not None:
                    logs.update({f"val_{k}": v for k, v in self._evaluate(*val_data).items()})
                logs.update(
                    lr=lr,
                    epoch_seconds=time.perf_counter() - started,
                    samples_per_second=n_rows / train_seconds,
                )
                stop = False
                for callback in callbacks:
                    stop = bool(callback.on_epoch_end(epoch, dict(logs))) or stop
                written = self._end_epoch(run, epoch, logs, stop=stop)
                if written is not None:
                    for callback in callbacks:
                        callback.on_checkpoint(epoch, written)
                if stop:
                    break

            if run.best_model is not None:  # kept only when early stopping is to restore it
                self.model.load_state_dict(run.best_model)
            for callback in callbacks:
                callback.on_train_end(dict(logs))
        return run.history

    def _end_epoch(self, run: _Run, epoch: int, logs: dict[str, Any], *, stop: bool) -> Path | None:
        """After the callbacks saw the epoch: history, plateau state, best weights, checkpoints; the path of
        ``checkpoint.pt`` if this epoch wrote it."""
        spec = self.spec
        run.epoch = epoch
        run.history.best_epoch = run.tracker.state.best_epoch
        run.history.stopped_early = stop and epoch < spec.epochs
        if spec.schedule.name == "plateau":  # watches val_loss, or loss without validation data
            value = logs.get("val_loss", logs["loss"])
            run.plateau = update_plateau(run.plateau, value, epoch=epoch, patience=spec.schedule.patience)
        improved = run.tracker.state.best_epoch == epoch
        if improved and spec.early_stopping is not None and spec.early_stopping.restore_best:
            run.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.run_dir is None:
            return None
        due = stop or epoch == spec.epochs or epoch % spec.checkpoint_every == 0
        return self._write_checkpoints(self.run_dir, run, improved=improved, due=due)

    def _train_epoch(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        bounds: list[tuple[int, int]],
        epoch: int,
        length: RunLength,
        n_reductions: int,
        batch_hooks: list[Callback],
        teacher: _Teacher | None,
    ) -> tuple[float, float] | None:
        """One pass over the training rows in a fresh random order; returns (mean loss, last step's lr), or
        None when one of ``batch_hooks`` ended training within the epoch. With a ``teacher``, each step's loss
        reads the teacher's outputs for the step's rows."""
        spec = self.spec
        self.model.train()
        order = torch.randperm(len(x), generator=self._generator, device=self.device)
        first_step = (epoch - 1) * length.steps_per_epoch
        per_step_lr = spec.schedule.name in PER_STEP_SCHEDULES  # else fit() set this epoch's rate
        step_losses = []
        for i, (start, end) in enumerate(bounds):
            if per_step_lr:
                self._set_lr(first_step + i, length, n_reductions)
            rows = order[start:end]
            inputs, targets = x[rows], y[rows]
            loss_fn = self.loss_fn if teacher is None else teacher.loss_for(rows)
            if spec.augment is not None:
                inputs = augment_images(inputs, spec.augment, generator=self._generator)
            inputs = self._laid_out(inputs)
            if isinstance(self.optimizer, torch.optim.LBFGS):
                step_losses.append(
                    lbfgs_step(self.optimizer, self.model, loss_fn, inputs, targets, spec=spec)
                )
                continue
            with self._autocast():
                loss = loss_fn(self.model(inputs), targets).mean()  # the one reduction of the loss
            step_losses.append(loss.detach())
            self._optimizer_step(loss)
            if batch_hooks and _asks_to_stop(batch_hooks, epoch, i + 1):
                return None
        lr = self.optimizer.param_groups[0]["lr"]
        return self._epoch_loss(step_losses, bounds, epoch, lr), lr

    def _set_lr(self, step: int, length: RunLength, n_reductions: int) -> float:
        if isinstance(self.optimizer, torch.optim.LBFGS):
            return LBFGS_STEP  # its line search chooses each step's length; no rate or schedule applies
        lr = lr_at(self.spec.schedule, self.spec.lr, step, length, n_reductions=n_reductions)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        spec = self.spec
        if self._l1_weights:
            loss = loss + spec.l1 * sum(w.abs().sum() for w in self._l1_weights)
        self.optimizer.zero_grad(set_to_none=True)
        if self._scaler is None:
            loss.backward()
            if spec.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
            self.optimizer.step()
            return
        self._scaler.scale(loss).backward()
        if spec.grad_clip is not None:
            self._scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
        self._scaler.step(self.optimizer)
        self._scaler.update()

    def _epoch_loss(
        self, step_losses: list[torch.Tensor], bounds: list[tuple[int, int]], epoch: int, lr: float
    ) -> float:
        """The epoch's mean training loss (one device sync per epoch); non-finite: a `TrainingError`."""
        losses = torch.stack(step_losses)
        sizes = torch.tensor([end - start for start, end in bounds], dtype=losses.dtype, device=losses.device)
        mean = float((losses * sizes).sum() / bounds[-1][1])
        if math.isfinite(mean):
            return mean
        bad = torch.nonzero(~torch.isfinite(losses)).flatten()
        step = int(bad[0]) + 1 if len(bad) else len(bounds)
        raise TrainingError(
            f"training diverged: the loss became {float(losses[step - 1])} at epoch {epoch}, step {step} of "
            f"{len(bounds)} (optimizer step {(epoch - 1) * len(bounds) + step}); expected a finite loss. "
            f"Try a lower learning rate (lr is {lr:g} now), gradient clipping (e.g. grad_clip: 1.0), or "
            "check the inputs for NaN/inf values and unscaled features."
        )

    # ------------------------------------------------------------------ evaluate / predict

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``loss`` (in training units) and the spec's metrics (original units) on ``(x, y)``."""
        return self._evaluate(*self._checked_tensors((x, y), "evaluate"))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, C]`` (classification) or values ``[N, T]`` in original units, on the
        device ``x`` is on."""
        if not isinstance(x, torch.Tensor):
            raise DataError(f"predict() takes a torch.Tensor, got {type(x).__name__}; use torch.as_tensor(x)")
        return self._prediction(self._outputs(x.to(self.device))).to(x.device)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs (logits, or values in training units) on all rows of ``x``, float32."""
        return self._outputs(x.to(self.device))

    def evaluate_outputs(
        self, outputs: torch.Tensor, y: torch.Tensor, *, names: Sequence[str] | None = None
    ) -> dict[str, float]:
        """:meth:`evaluate` from raw ``outputs`` at hand for ``y``'s rows (several models' combined, say);
        ``names``: only those of ``loss`` and the spec's metrics."""
        wanted = ("loss", *self.metrics) if names is None else tuple(names)
        outputs, y = outputs.to(self.device), y.to(self.device)
        values = {"loss": float(self.loss_fn(outputs, y).mean())} if "loss" in wanted else {}
        metrics = [name for name in self.metrics if name in wanted]
        return values | compute_metrics(metrics, *self._compared(outputs, y), n_classes=self.n_classes)

    def metric_terms(self, outputs: torch.Tensor, y: torch.Tensor, name: str) -> np.ndarray | None:
        """Per-row terms of metric ``name`` on raw ``outputs`` (``metric_row_terms``: a bootstrap over rows
        reweights them); None for a metric that is not a mean over rows."""
        return metric_row_terms(name, *self._compared(outputs.to(self.device), y.to(self.device)))

    def _compared(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The prediction (probabilities, or values in original units) and the target it is scored against."""
        return self._prediction(outputs), self._original_units(y) if self.task != "classification" else y

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return self.evaluate_outputs(self._outputs(x), y)

    def _outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs on all rows of ``x``: eval mode, no gradients, in large batches."""
        self.model.eval()
        batch = max(self.spec.batch_size, _MIN_EVAL_BATCH)
        with torch.no_grad(), self._autocast():
            parts = [
                self.model(self._laid_out(x[start : start + batch])) for start in range(0, len(x), batch)
            ]
        return torch.cat(parts).float()

    def _laid_out(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images in channels-last when the model's convolutions are (a no-op when they already are)."""
        if self._channels_last and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def _prediction(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.task != "classification":
            return self._original_units(outputs)
        if self.loss_name == "bce":  # one logit: the probability of class 1
            positive = torch.sigmoid(outputs.reshape(-1))
            return torch.stack([1.0 - positive, positive], dim=1)
        return torch.softmax(outputs, dim=1)

    def _original_units(self, values: torch.Tensor) -> torch.Tensor:
        if self._target_scale is None:
            return values
        mean, std = self._target_scale
        return values * std + mean

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.spec.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return nullcontext()

    # ------------------------------------------------------------------ run state and checkpoints

    def _new_run(self, has_val: bool) -> _Run:
        es = self.spec.early_stopping
        if es is None:  # still track the best epoch (History.best_epoch, best.pt), never stop
            monitor = "val_loss" if has_val else "loss"
            return _Run(EarlyStopping(monitor, patience=None), History(monitor))
        valid = ["loss"] + ([f"val_{name}" for name in ("loss", *self.metrics)] if has_val else [])
        if es.monitor not in valid:
            why = "" if has_val or not es.monitor.startswith("val_") else " (fit() got no validation data)"
            raise SpecError(
                f"early_stopping.monitor '{es.monitor}' is not logged{why}. "
                f"Valid monitors: {', '.join(valid)}"
            )
        return _Run(EarlyStopping.from_spec(es), History(es.monitor))

    def _checkpoint(self, run: _Run) -> Checkpoint:
        rng = {"data": self._generator.get_state(), "cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return Checkpoint(
            format=CHECKPOINT_FORMAT,
            epoch=run.epoch,
            spec=self.spec.model_dump(mode="json"),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            best_model=run.best_model,
            monitor=run.tracker.state._asdict(),
            plateau={"n_reductions": run.plateau.n_reductions, **run.plateau.monitor._asdict()},
            history=run.history.to_dict(),
            rng=rng,
            scaler=self._scaler.state_dict() if self._scaler is not None else None,
        )

    def _write_checkpoints(self, run_dir: Path, run: _Run, *, improved: bool, due: bool) -> Path | None:
        """``checkpoint.pt`` when ``due``, ``best.pt`` when ``improved``; the path of the first if written."""
        if not (improved or due):
            return None
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = self._checkpoint(run)
        layout = RunLayout(run_dir)
        if improved:
            save_checkpoint(layout.best_checkpoint, checkpoint)
        if not due:
            return None
        save_checkpoint(layout.checkpoint, checkpoint)
        return layout.checkpoint

    def _restore(self, path: str | Path, run: _Run) -> None:
        """Load a checkpoint into the model, optimizer, RNGs and the loop state ``run``."""
        checkpoint = load_checkpoint(path, map_location=self.device)
        saved = TrainSpec.model_validate(checkpoint["spec"]).model_dump()
        current = self.spec.model_dump()
        changed = sorted(k for k in current if saved[k] != current[k] and k not in _RESUMABLE_CHANGES)
        if changed:
            raise SpecError(
                f"cannot resume from '{path}': the spec differs in {', '.join(changed)} (only "
                f"{', '.join(sorted(_RESUMABLE_CHANGES))} may change). "
                "Resume with the spec the run started with."
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self._scaler is not None and checkpoint["scaler"] is not None:
            self._scaler.load_state_dict(checkpoint["scaler"])
        rng = checkpoint["rng"]
        self._generator.set_state(rng["data"].cpu())
        self._rng_state.update({k: v.cpu() for k, v in rng.items() if k != "data"})
        run.epoch = checkpoint["epoch"]
        run.history = History.from_dict(checkpoint["history"])
        run.history.stopped_early = False
        run.tracker.state = MonitorState(**checkpoint["monitor"])
        plateau = dict(checkpoint["plateau"])
        run.plateau = PlateauState(n_reductions=plateau.pop("n_reductions"), monitor=MonitorState(**plateau))
        run.best_model = checkpoint["best_model"]

    # ------------------------------------------------------------------ input checks

    def _checked_tensors(self, data: Any, part: str) -> Tensors:
        """``(x, y)`` on the device, checked once: tensors, same rows, finite x, labels that fit the task
        (for classification without ``n_classes``, they set it)."""
        X, y = checked_pair(data, part, device=self.device)
        if self.task != "classification":
            return X, checked_targets(y, part, task=self.task)
        self.n_classes = checked_labels(y, part, n_classes=self.n_classes)
        return X, y

    def _check_fit(self, x: torch.Tensor, y: torch.Tensor) -> tuple[int, ...]:
        """Checks that need the training data: augmentation fits the inputs, and a dry forward pass on two
        rows (eval mode: no randomness drawn) has the output size the task needs, which it returns (one row's
        shape: ``(n_classes,)``, ``(1,)`` for bce, the targets' ``(T,)``)."""
        augment = self.spec.augment
        if augment is not None and (augment.hflip or augment.shift) and x.ndim != 4:
            raise SpecError(
                f"augment.hflip and augment.shift transform images [N, C, H, W], but the training inputs "
                f"have shape {list(x.shape)}. For other data use augment.noise_std only, or no augment."
            )
        expected: tuple[int, ...]
        if self.task == "classification":
            expected = (output_dim_for(self.task, self.n_classes, loss=self.loss_name),)
        else:
            expected = tuple(y.shape[1:])
        self.model.eval()
        with torch.no_grad(), self._autocast():
            shape = tuple(self.model(x[:2]).shape)
        if shape[1:] != expected and not (self.loss_name == "bce" and len(shape) == 1):
            dim = math.prod(expected)
            raise SpecError(
                f"the model outputs shape {list(shape)} for {shape[0]} rows, but this {self.task} task "
                f"(loss {self.loss_name}) needs [{shape[0]}, {', '.join(map(str, expected))}]. "
                f"Build the model with output_dim={dim} (tunelab.train.output_dim_for gives it)."
            )
        return expected

    def _checked_teacher(
        self, teacher: Any, *, n_rows: int, output_shape: tuple[int, ...]
    ) -> _Teacher | None:
        """``fit``'s ``teacher`` checked against ``spec.distill``, the training rows and the model's output,
        as float32 on the device (moved once); None without distillation."""
        distill = self.spec.distill
        if distill is None:
            if teacher is not None:
                raise SpecError(
                    "fit() got teacher outputs, but spec.distill is None, so nothing would learn from them. "
                    "Set train.distill (e.g. distill: {temperature: 4.0, weight: 0.5}), or drop teacher="
                )
            return None
        how = (
            f"the teacher's raw outputs on the {n_rows} training rows, float "
            f"[{n_rows}, {', '.join(map(str, output_shape))}] in the order of the rows (logits for "
            "classification, standardized units otherwise: a teacher Trainer's outputs(X_train))"
        )
        if teacher is None:
            raise SpecError(
                f"spec.distill is set, but fit() got no teacher; pass teacher= {how}, or set distill to None"
            )
        if not isinstance(teacher, torch.Tensor) or not teacher.is_floating_point():
            given = teacher.dtype if isinstance(teacher, torch.Tensor) else type(teacher).__name__
            raise SpecError(f"teacher must be a floating point torch.Tensor, got {given}; expected {how}")
        if teacher.ndim == 1 and output_shape == (1,):
            teacher = teacher.unsqueeze(1)
        if tuple(teacher.shape) != (n_rows, *output_shape):
            raise SpecError(f"teacher has shape {list(teacher.shape)}; expected {how}")
        teacher = teacher.to(device=self.device, dtype=torch.float32)
        if not bool(torch.isfinite(teacher).all()):
            raise DataError("teacher outputs hold NaN or infinite values; expected finite outputs")
        loss = make_distill_loss(
            self.task,
            self.loss_name,
            label_smoothing=self.spec.label_smoothing,
            temperature=distill.temperature,
            weight=distill.weight,
        )
        return _Teacher(teacher, loss)


def _asks_to_stop(hooks: list[Callback], epoch: int, step: int) -> bool:
    """Every hook sees the step (a list, not a short-circuiting any()); True if one asks to stop."""
    return any([bool(hook.on_batch_end(epoch, step)) for hook in hooks])  # noqa: C419
