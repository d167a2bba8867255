"""A member trained inside a population matches the same config trained alone with torch.nn + torch.optim."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.fused import (
    PopAdagrad,
    PopAdam,
    PopAdamW,
    PopRMSprop,
    PopSGD,
    Population,
    PopulationTrainer,
)

K = 3
# Per-member hyperparameters (one value per member) and the structural flags of each optimizer case.
CASES: dict[str, tuple[type, type[torch.optim.Optimizer], dict[str, list[float]], dict[str, bool]]] = {
    "sgd": (
        PopSGD,
        torch.optim.SGD,
        {"lr": [0.1, 0.05, 0.2], "momentum": [0.0, 0.9, 0.5], "weight_decay": [0.0, 1e-3, 1e-2]},
        {},
    ),
    "sgd_nesterov": (
        PopSGD,
        torch.optim.SGD,
        {"lr": [0.1, 0.05, 0.2], "momentum": [0.3, 0.9, 0.5]},
        {"nesterov": True},
    ),
    "adam": (
        PopAdam,
        torch.optim.Adam,
        {
            "lr": [1e-2, 3e-3, 3e-2],
            "beta1": [0.9, 0.8, 0.5],
            "beta2": [0.999, 0.99, 0.9],
            "eps": [1e-8, 1e-6, 1e-8],
            "weight_decay": [0.0, 1e-2, 1e-1],
        },
        {},
    ),
    "adamw": (
        PopAdamW,
        torch.optim.AdamW,
        {"lr": [1e-2, 3e-3, 3e-2], "beta1": [0.9, 0.8, 0.5], "weight_decay": [0.0, 1e-2, 1e-1]},
        {},
    ),
    "rmsprop": (
        PopRMSprop,
        torch.optim.RMSprop,
        {
            "lr": [1e-2, 3e-3, 1e-3],
            "alpha": [0.99, 0.9, 0.5],
            "momentum": [0.0, 0.9, 0.5],
            "weight_decay": [0.0, 1e-3, 1e-2],
        },
        {},
    ),
    "rmsprop_centered": (
        PopRMSprop,
        torch.optim.RMSprop,
        {"lr": [1e-2, 3e-3, 1e-3], "momentum": [0.0, 0.9, 0.5]},
        {"centered": True},
    ),
    "adagrad": (
        PopAdagrad,
        torch.optim.Adagrad,
        {
            "lr": [0.1, 0.05, 0.01],
            "lr_decay": [0.0, 0.1, 0.01],
            "weight_decay": [0.0, 1e-3, 1e-2],
            "initial_accumulator_value": [0.0, 0.1, 1.0],
        },
        {},
    ),
}
MODELS = [
    "mlp",
    "cnn",
    "rnn_relu_2layer_mean",
    "lstm_bidirectional_2layer",
    "gru_bidirectional",
    "gru_2layer_mean",
]


def torch_kwargs(hparams: dict[str, float]) -> dict[str, Any]:
    """Our flat per-member names -> torch.optim's keyword arguments."""
    kwargs: dict[str, Any] = {name: value for name, value in hparams.items() if not name.startswith("beta")}
    if "beta1" in hparams or "beta2" in hparams:
        kwargs["betas"] = (hparams.get("beta1", 0.9), hparams.get("beta2", 0.999))
    return kwargs


def train_alone(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    seed: int,
    n_epochs: int,
    batch_size: int,
    label_smoothing: float = 0.0,
    l1: float = 0.0,
    clip_norm: float = math.inf,
) -> None:
    """The plain single-model loop the population must reproduce (same batch order from the same seed)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n_epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[index]), y[index], label_smoothing=label_smoothing)
            if l1:
                loss = loss + l1 * sum(p.abs().sum() for p in model.parameters() if p.dim() >= 2)
            loss.backward()
            if math.isfinite(clip_norm):
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            optimizer.step()


def assert_members_match(
    population: Population, alone: list[nn.Module], *, atol: float = 1e-5, rtol: float = 1e-4
) -> None:
    for k, reference in enumerate(alone):
        ours = population.member(k).state_dict()
        theirs = reference.state_dict()
        assert ours.keys() == theirs.keys()
        for name, value in theirs.items():
            torch.testing.assert_close(
                ours[name],
                value,
                atol=atol,
                rtol=rtol,
                msg=lambda m, k=k, name=name: f"member {k}, {name}: {m}",
            )


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", MODELS)
def test_member_trained_in_population_matches_training_alone(kind, case, build_model, data_for):
    """Default implementation: torch's fused kernel per member where one exists (SGD, Adam(W), Adagrad).

    In float64: a population and a lone model sum the same products in a different order (batched GEMMs
    against single ones), and optimizers that divide by a running second moment (centered RMSprop, Adam near
    zero gradients) amplify that rounding without bound as the moment shrinks. In float32 the gap reached
    1.1e-4 on some machines; in float64 it stays below 1e-9 on every one, so any larger gap is a real bug."""
    check_equivalence(kind, case, "auto", build_model, data_for, dtype=torch.float64, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["mlp", "gru_2layer_mean"])
def test_vectorized_foreach_optimizers_match_training_alone(kind, case, build_model, data_for):
    """The [K, M] tensor-op implementation, with per-member [K, 1] hyperparameters (float64: see above)."""
    check_equivalence(kind, case, "foreach", build_model, data_for, dtype=torch.float64, atol=1e-9, rtol=1e-7)


def check_equivalence(
    kind,
    case,
    implementation,
    build_model,
    data_for,
    *,
    device="cpu",
    dtype=torch.float32,
    atol=1e-5,
    rtol=1e-4,
):
    """Train K members of ``kind`` with optimizer ``case`` as one population and each alone (on ``device``,
    in ``dtype``); every member's weights must match its lone twin's."""
    pop_cls, torch_cls, hparams, flags = CASES[case]
    x, y = data_for(kind, n=24)
    x, y = x.to(device, dtype), y.to(device)
    models = [build_model(kind, seed=k).to(device, dtype) for k in range(K)]
    population = Population.from_modules(models)
    optimizer = pop_cls(
        population.parameters(), n_members=K, implementation=implementation, **hparams, **flags
    )
    if implementation == "auto":  # a fused kernel per member on the CPU where torch has one
        implementation = "fused" if device == "cpu" and pop_cls is not PopRMSprop else "foreach"
    assert optimizer.implementation == implementation
    PopulationTrainer(population, optimizer).fit(x, y, n_epochs=2, batch_size=8, seed=5)

    alone = [build_model(kind, seed=k).to(device, dtype) for k in range(K)]
    for k, model in enumerate(alone):
        member_hparams = {name: values[k] for name, values in hparams.items()}
        torch_optimizer = torch_cls(model.parameters(), **torch_kwargs(member_hparams), **flags)
        train_alone(model, torch_optimizer, x, y, seed=5, n_epochs=2, batch_size=8)
    # The population really trained: members moved away from their initial weights.
    initial = build_model(kind, seed=0).to(device, dtype).state_dict()
    assert any(not torch.allclose(initial[n], v) for n, v in population.member(0).state_dict().items())
    assert_members_match(population, alone, atol=atol, rtol=rtol)


def test_per_member_label_smoothing_l1_and_clipping_match_torch(build_model, data_for):
    x, y = data_for("mlp", n=32)
    smoothing, l1, clip = [0.0, 0.1, 0.3], [0.0, 1e-3, 1e-2], [math.inf, 0.5, 0.05]
    lr = [0.05, 0.1, 0.2]
    population = Population.from_modules([build_model("mlp", seed=k) for k in range(K)])
    trainer = PopulationTrainer(
        population,
        PopSGD(population.parameters(), n_members=K, lr=lr, momentum=0.9),
        label_smoothing=smoothing,
        l1=l1,
        clip_norm=clip,
    )
    trainer.fit(x, y, n_epochs=2, batch_size=8, seed=1)
    alone = [build_model("mlp", seed=k) for k in range(K)]
    for k, model in enumerate(alone):
        optimizer = torch.optim.SGD(model.parameters(), lr=lr[k], momentum=0.9)
        train_alone(
            model,
            optimizer,
            x,
            y,
            seed=1,
            n_epochs=2,
            batch_size=8,
            label_smoothing=smoothing[k],
            l1=l1[k],
            clip_norm=clip[k],
        )
    assert_members_match(population, alone)


def test_schedule_set_each_step_matches_torch_param_group_lr(build_model, data_for):
    """A per-member lr changed between steps (a schedule) acts like torch's param_group['lr'] = ..."""
    x, y = data_for("mlp", n=16)
    population = Population.from_modules([build_model("mlp", seed=k) for k in range(2)])
    optimizer = PopAdam(population.parameters(), n_members=2)
    trainer = PopulationTrainer(population, optimizer)
    alone = [build_model("mlp", seed=k) for k in range(2)]
    torch_optimizers = [torch.optim.Adam(m.parameters()) for m in alone]
    for step in range(4):
        lrs = [0.01 * 0.5**step, 0.02 / (step + 1)]
        optimizer.set_hparam("lr", lrs)
        trainer.train_step(x, y)
        for model, torch_optimizer, lr in zip(alone, torch_optimizers, lrs, strict=True):
            torch_optimizer.param_groups[0]["lr"] = lr
            torch_optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            torch_optimizer.step()
    assert_members_match(population, alone)


def test_evaluate_matches_each_member_in_eval_mode(build_model, data_for):
    x, y = data_for("cnn", n=20)
    models = [build_model("cnn", seed=k) for k in range(K)]
    population = Population.from_modules(models)
    trainer = PopulationTrainer(
        population, PopAdam(population.parameters(), n_members=K, lr=[1e-2, 1e-3, 0.0])
    )
    trainer.fit(x, y, n_epochs=1, batch_size=10, seed=0)
    metrics = trainer.evaluate(x, y, batch_size=7)
    for k in range(K):
        member = population.member(k).eval()
        with torch.no_grad():
            logits = member(x)
        assert metrics["loss"][k].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
        assert metrics["accuracy"][k].item() == pytest.approx((logits.argmax(1) == y).double().mean().item())
    assert population.training  # evaluate restores the mode
