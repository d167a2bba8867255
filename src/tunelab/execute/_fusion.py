"""Whether to train a search's trials as fused populations, and how many members: decided by measurement.

On a 2-core CPU fused MLPs pay (3.2x at 784-64-10, 1.5x at 784-256-10) and fused CNNs and LSTMs do not
(grouped convolutions ran at 0.37x; docs/FUSED.md). So ``fused: auto`` considers MLPs only, and fuses when a
short probe on the study's own data says a population trains more member-samples per second than the ordinary
single-model trainer; K grows 1, 2, 4, 8, 16 while throughput still rises by at least 10%.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
import torch
from torch import Tensor

from tunelab.data import DataBundle
from tunelab.errors import SpecError, TrainingError
from tunelab.execute._evaluator import output_dim
from tunelab.execute._sizing import forward_flops
from tunelab.execute._spec_population import SpecPopulation, fusible_loss_reason
from tunelab.inputs import TextInput
from tunelab.models import ModelSpec, TextSpec, build_model
from tunelab.search import SearchSpace, SearchSpec
from tunelab.search.space import Choice, Fixed
from tunelab.spec import ExperimentSpec
from tunelab.train import TrainSpec, make_loss, make_optimizer, resolve_device

__all__ = [
    "PBT_MIN_POPULATION",
    "FusionDecision",
    "choose_fusion",
    "fusion_blocker",
    "measure_throughput",
]

FusedMode = Literal["auto", "on", "off"]
_SIZES = (1, 2, 4, 8, 16)
_MIN_GAIN = 1.10  # a bigger population must train at least 10% more member-samples per second
_PROBE_SECONDS = 0.3  # per measurement, in _WINDOWS windows
_WINDOWS = 3
_PROBE_BATCHES = 16  # distinct minibatches the probe cycles through
# PBT's population size when none is configured: the measured one, but no fewer members than this, since
# members rank and copy one another (with 4 and quantile_fraction 0.25, the worst copies the best).
PBT_MIN_POPULATION = 4


@dataclass(frozen=True)
class FusionDecision:
    """The search's choice: ``fused`` with ``population_size`` members, or sequential; ``reason`` says why in
    words and ``throughput`` holds the measured member-samples per second (``sequential``, ``K=<k>``)."""

    fused: bool
    population_size: int
    reason: str
    throughput: dict[str, float] = field(default_factory=dict)
    flop_rate: float | None = None  # the chosen population's training FLOP/s (3 x forward), when measured

    def to_dict(self) -> dict[str, Any]:
        return {
            "fused": self.fused,
            "population_size": self.population_size,
            "reason": self.reason,
            "throughput_member_samples_per_s": {k: round(v, 1) for k, v in self.throughput.items()},
            "training_gflops_per_s": None if self.flop_rate is None else round(self.flop_rate / 1e9, 2),
        }


def choose_fusion(
    search: SearchSpec,
    bundle: DataBundle,
    *,
    make_spec: Callable[[dict[str, Any]], ExperimentSpec],
    seed: int = 0,
) -> FusionDecision:
    """Decide how a search (``search``: a ``SearchSpec``) trains its trials on ``bundle`` (a ``DataBundle``).

    ``off``: sequential. Otherwise a configuration sampled from the space (``make_spec(overrides)`` builds its
    spec) is checked by :func:`fusion_blocker` (``on`` raises :class:`~tunelab.errors.SpecError` with the
    reason; ``auto`` goes sequential); then ``search.population_size`` is taken as it is, or measured with
    :func:`measure_throughput` on that configuration and decided as the module docstring says.

    PBT copies weights between trials trained side by side, so under scheduler ``pbt`` the search is fused
    whatever ``auto`` would measure (a search that cannot run as populations is a ``SpecError``), in
    populations of ``search.population_size`` or else of the measured size but no fewer than
    :data:`PBT_MIN_POPULATION` (and never shrunk to fit a time budget: ``PopulationExecutor.pack_size``).
    """
    pbt = search.scheduler.name == "pbt"
    mode: FusedMode = "on" if pbt else search.fused
    if mode == "off":
        return FusionDecision(False, 1, "search.fused is off")
    families = _searched_families(search.search_space())
    if mode == "auto" and families not in (set(), {"mlp"}, {"linear", "mlp"}, {"linear"}):
        return FusionDecision(
            False, 1, f"the search chooses among model types {sorted(families)}; auto fuses MLPs only"
        )
    spec = _sample_spec(search.search_space(), make_spec, seed=seed)
    searched = _searched_values(search.search_space(), "train.optimizer")
    if pbt and "lbfgs" in searched:
        raise SpecError(
            "scheduler pbt trains its trials side by side as fused populations, but L-BFGS (train.optimizer "
            "lbfgs) trains one model at a time. Drop lbfgs from search.space, or choose another scheduler."
        )
    others = searched - {"lbfgs"}
    if spec.train.optimizer == "lbfgs" and others:
        # L-BFGS trials train alone (PopulationExecutor's ``alone``); the populations are of the others.
        train = spec.train.model_copy(update={"optimizer": sorted(others)[0]})
        spec = spec.model_copy(update={"train": train})
    encoders = _searched_values(search.search_space(), "model.encoder")
    if pbt and encoders - {"bag"}:
        raise SpecError(
            "scheduler pbt trains its trials side by side as fused populations, but text encoders "
            f"{sorted(encoders - {'bag'})} have no population layers. Search model.encoder bag only, or "
            "choose another scheduler."
        )
    if isinstance(spec.model, TextSpec) and spec.model.encoder != "bag" and "bag" in encoders:
        # Likewise TextCNN and recurrent text trials train alone; the populations are of the bags.
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"encoder": "bag"})})
    blocker = fusion_blocker(
        mode=mode,
        model=spec.model,
        train=spec.train,
        task=bundle.task,
        sampler=search.sampler,
    )
    if blocker is not None and pbt:
        raise SpecError(
            f"scheduler pbt trains its trials side by side as fused populations, but this search cannot run "
            f"as populations: {blocker}. Choose another scheduler (asha, hyperband, median, none)."
        )
    if blocker is not None and mode == "on":
        raise SpecError(
            f"search.fused is 'on', but this search cannot run as fused populations: {blocker}. "
            "Set search.fused to 'auto' (fuse where it applies and pays) or 'off'."
        )
    if blocker is not None:
        return FusionDecision(False, 1, blocker)
    if search.population_size is not None:
        decision = decide(mode, {}, population_size=search.population_size)
    else:
        decision = _measured(mode, spec, bundle)
    return _for_pbt(search, decision) if pbt else decision


def _measured(mode: FusedMode, spec: ExperimentSpec, bundle: DataBundle) -> FusionDecision:
    """The decision from the throughput of ``spec``'s populations against its single-model trainer."""
    y = (
        bundle.y_train
        if bundle.task == "classification" or bundle.y_train.ndim == 2
        else bundle.y_train[:, None]
    )
    outputs = output_dim(bundle, spec.train)
    rates = measure_throughput(
        spec.model,
        spec.train,
        (bundle.X_train, y),
        input_shape=tuple(bundle.input_shape),
        output_dim=outputs,
        task=bundle.task,
        text=bundle.text,
    )
    decision = decide(mode, rates, population_size=None)
    probed = _describe(spec)
    flops = forward_flops(
        spec.model, input_shape=tuple(bundle.input_shape), output_dim=outputs, text=bundle.text
    )
    flop_rate = 3.0 * flops * rates.get(f"K={decision.population_size}", 0.0) or None
    return FusionDecision(
        decision.fused, decision.population_size, f"{decision.reason} ({probed})", rates, flop_rate
    )


def _sample_spec(
    space: SearchSpace, make_spec: Callable[[dict[str, Any]], ExperimentSpec], *, seed: int
) -> ExperimentSpec:
    """A configuration the sampler might propose, drawn at random from ``space`` (the probe's subject)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    error: TrainingError | None = None
    for _ in range(5):
        try:
            return make_spec(space.sample(study.ask()))
        except TrainingError as err:
            error = err
    raise SpecError(f"five configurations sampled from search.space were all rejected; the last: {error}")


def _searched_families(space: SearchSpace) -> set[str]:
    """The model types a space's ``model.type`` parameter chooses among (none: the base spec's type)."""
    return _searched_values(space, "model.type")


def _searched_values(space: SearchSpace, path: str) -> set[str]:
    """The values a space's parameter ``path`` chooses among or fixes (none: not in the space)."""
    node = {name: space[name] for name in space}.get(path)
    if isinstance(node, Choice):
        return {str(value) for value in node.choices}
    return {str(node.value)} if isinstance(node, Fixed) else set()


def _describe(spec: ExperimentSpec) -> str:
    model = spec.model
    shape = f"hidden {list(model.hidden)}" if hasattr(model, "hidden") else model.type
    return (
        f"probed on a sampled {model.type} ({shape}), {spec.train.optimizer}, batch {spec.train.batch_size}"
    )


def _for_pbt(search: SearchSpec, measured: FusionDecision) -> FusionDecision:
    """PBT's populations (see :func:`choose_fusion`), from what was measured (or configured)."""
    if search.population_size is not None:
        size, how = search.population_size, "as search.population_size asks"
    else:
        size = max(PBT_MIN_POPULATION, measured.population_size)
        how = f"the measured size but at least {PBT_MIN_POPULATION}; {measured.reason}"
    why = (
        "whatever search.fused 'auto' would decide"
        if search.fused == "auto"
        else f"search.fused '{search.fused}'"
    )
    reason = (
        f"scheduler pbt trains its trials side by side, so the search runs as fused populations ({why}); "
        f"each population is one PBT population of {size} members ({how})"
    )
    return FusionDecision(True, size, reason, measured.throughput, measured.flop_rate)


def fusion_blocker(
    *, mode: FusedMode, model: ModelSpec, train: TrainSpec, task: str, sampler: str
) -> str | None:
    """Why this search cannot (``on``) or should not (``auto``) run fused populations; None when it may."""
    family = getattr(model, "type", "custom")
    encoder = getattr(model, "encoder", None)
    if family == "text" and encoder != "bag":
        return (
            f"text encoder '{encoder}': population layers exist for the bag encoder only (TextCNN and "
            "recurrent text models train one by one)"
        )
    if mode == "auto" and family not in ("mlp", "text"):
        return (
            f"model type '{family}': on a CPU fused {family.upper()}s measured slower than sequential; auto "
            "fuses MLPs only"
        )
    if family == "custom":
        return "a custom model's structure is unknown to the population layers"
    if getattr(model, "windowed", False):
        return "model.lags / model.normalize read windows through a step that has no population layers yet"
    if sampler == "grid":
        return "the grid sampler chooses every parameter itself, so trials cannot be packed by structure"
    if train.amp:
        return "amp shares one gradient scaler, which would couple the members"
    if train.optimizer == "lbfgs":
        return "L-BFGS (train.optimizer lbfgs) trains one model at a time: its line search is per model"
    if train.distill is not None:
        return "distillation (train.distill) reads a teacher's outputs, which populations do not carry"
    return fusible_loss_reason(task, train.loss)


def measure_throughput(
    model: ModelSpec,
    train: TrainSpec,
    data: tuple[Tensor, Tensor],
    *,
    input_shape: tuple[int, ...],
    output_dim: int,
    task: str,
    seconds: float = _PROBE_SECONDS,
    text: TextInput | None = None,
) -> dict[str, float]:
    """Member-samples per second of the single-model trainer's step (``sequential``) and of populations of
    1, 2, 4... members (``K=<k>``) on minibatches of ``data``, growing K while it pays (see module docstring).
    """
    x, y = data
    batch = train.rows_per_step(len(x))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(train.seed))
    starts = range(0, len(x) - batch + 1, batch)[:_PROBE_BATCHES]
    batches = [(x[order[s : s + batch]], y[order[s : s + batch]]) for s in starts] or [(x, y)]
    # On the device the trials train on, as the populations below are built there.
    device = resolve_device(train.device)
    batches = [(xb.to(device), yb.to(device)) for xb, yb in batches]
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: leave it as it was
        single = _single_step(model, train, input_shape, output_dim, task, text)
        rates = {"sequential": _rate(single, batches, seconds)}
    previous = 0.0
    for size in _SIZES:
        population = SpecPopulation(
            [model] * size,
            [train] * size,
            input_shape=input_shape,
            output_dim=output_dim,
            task=task,
            text=text,
        )
        rate = size * _rate(population.trainer.train_step, batches, seconds)
        rates[f"K={size}"] = rate
        if size > 1 and rate < previous * _MIN_GAIN:
            break
        previous = rate
    return rates


def decide(mode: FusedMode, rates: dict[str, float], *, population_size: int | None) -> FusionDecision:
    """The decision from measured ``rates``, or the given ``population_size`` taken as it is."""
    sequential = rates.get("sequential", 0.0)
    fused = {int(k.removeprefix("K=")): v for k, v in rates.items() if k.startswith("K=")}
    if population_size is not None:
        if population_size < 1:
            raise SpecError(f"search.population_size must be >= 1; got {population_size}")
        measured = fused.get(population_size)
        note = f" ({measured:.0f} member-samples/s vs {sequential:.0f} sequential)" if measured else ""
        return FusionDecision(
            mode == "on" or population_size > 1,
            population_size,
            f"population_size {population_size} as the spec asks{note}",
            rates,
        )
    best_k = _grown_size(fused)
    gain = fused.get(best_k, 0.0) / sequential if sequential else 0.0
    summary = f"K={best_k} trains {fused.get(best_k, 0.0):.0f} member-samples/s, {gain:.2f}x sequential"
    if mode == "on" or (gain >= _MIN_GAIN and best_k > 1):
        return FusionDecision(True, best_k, f"measured: {summary}", rates)
    return FusionDecision(
        False, 1, f"measured: {summary}; below the {_MIN_GAIN:.2f}x that fusion needs", rates
    )


def _grown_size(rates: dict[int, float]) -> int:
    """The K reached by growing 1, 2, 4... while member-samples/s rises by at least 10% at each step."""
    sizes = sorted(rates)
    if not sizes:
        return 1
    chosen = sizes[0]
    for size in sizes[1:]:
        if rates[size] < rates[chosen] * _MIN_GAIN:
            break
        chosen = size
    return chosen


def _rate(
    step: Callable[[Tensor, Tensor], Any], batches: list[tuple[Tensor, Tensor]], seconds: float
) -> float:
    """Samples per second of ``step`` over ``batches`` (cycled), after two warm-up steps: the best of a few
    windows, since other work on a shared machine only ever slows a window down."""
    device = batches[0][0].device
    for x, y in batches[:2]:
        step(x, y)
    best, n_steps = 0.0, 0
    for _ in range(_WINDOWS):
        _wait_for(device)
        n_samples, started = 0, time.perf_counter()
        while n_samples == 0 or time.perf_counter() - started < seconds / _WINDOWS:
            x, y = batches[n_steps % len(batches)]
            step(x, y)
            n_samples += len(x)
            n_steps += 1
        _wait_for(device)  # on a GPU the steps are queued: count them once they have run
        best = max(best, n_samples / (time.perf_counter() - started))
    return best


def _wait_for(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _single_step(
    model_spec: ModelSpec,
    train: TrainSpec,
    input_shape: tuple[int, ...],
    output_dim: int,
    task: str,
    text: TextInput | None = None,
) -> Callable[[Tensor, Tensor], None]:
    """One optimizer step of the single-model trainer's kind (its model, loss and torch.optim optimizer)."""
    model = build_model(
        model_spec, input_shape=input_shape, output_dim=output_dim, seed=train.seed, text=text
    )
    model.to(resolve_device(train.device))
    optimizer = make_optimizer(model.parameters(), train)
    loss_fn = make_loss(task, train.loss, label_smoothing=train.label_smoothing)

    def step(x: Tensor, y: Tensor) -> None:
        loss = loss_fn(model(x), y).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step
