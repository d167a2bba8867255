"""Knowledge distillation (``TrainSpec.distill``, ``Trainer.fit(teacher=)``): the mixed per-sample loss is the
textbook one, weight 0 is plain training, the teacher term alone drives a student to the teacher's answers,
and a missing, unwanted or misshapen teacher is refused with a message."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from tunelab.errors import DataError, SpecError
from tunelab.train import DistillSpec, Trainer, TrainSpec, make_distill_loss

D = torch.float64  # hand computations in double precision


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ the loss, by hand


def test_cross_entropy_distillation_is_the_hand_computed_mix():
    gen = _seeded(0)
    student, teacher = (
        torch.randn(3, 4, generator=gen, dtype=D),
        3 * torch.randn(3, 4, generator=gen, dtype=D),
    )
    labels = torch.tensor([2, 0, 3])
    T, w, eps = 2.5, 0.3, 0.1
    loss = make_distill_loss("classification", temperature=T, weight=w, label_smoothing=eps)

    expected = []
    for s, t, y in zip(student, teacher, labels, strict=True):
        log_p = s - s.exp().sum().log()  # log-softmax of the student at T = 1
        hard = (1 - eps) * -log_p[y] + eps * (-log_p).mean()
        q_s = (s / T).exp() / (s / T).exp().sum()
        q_t = (t / T).exp() / (t / T).exp().sum()
        soft = T**2 * (q_t * (q_t / q_s).log()).sum()
        expected.append((1 - w) * hard + w * soft)
    torch.testing.assert_close(loss(student, labels, teacher), torch.stack(expected))


def test_binary_distillation_is_the_hand_computed_mix_and_the_two_logit_case():
    gen = _seeded(1)
    student, teacher = (
        torch.randn(4, 1, generator=gen, dtype=D),
        2 * torch.randn(4, 1, generator=gen, dtype=D),
    )
    labels = torch.tensor([0, 1, 1, 0])
    T, w = 3.0, 0.6
    loss = make_distill_loss("classification", "bce", temperature=T, weight=w)

    s, t, y = student.flatten(), teacher.flatten(), labels.to(D)
    q, p = torch.sigmoid(s / T), torch.sigmoid(t / T)
    hard = -(y * torch.sigmoid(s).log() + (1 - y) * (1 - torch.sigmoid(s)).log())
    soft = T**2 * (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log())
    got = loss(student, labels, teacher)
    torch.testing.assert_close(got, (1 - w) * hard + w * soft)

    # One logit z is the softmax of the two logits (0, z): the soft term is cross-entropy's.
    two = make_distill_loss("classification", temperature=T, weight=1.0)
    pad = torch.zeros_like(student)
    torch.testing.assert_close(
        make_distill_loss("classification", "bce", temperature=T, weight=1.0)(student, labels, teacher),
        two(torch.cat([pad, student], 1), labels, torch.cat([pad, teacher], 1)),
    )


@pytest.mark.parametrize("name", ["mse", "huber"])
def test_regression_distillation_is_the_hand_computed_mix(name):
    gen = _seeded(2)
    student, teacher, target = (3 * torch.randn(3, 2, generator=gen, dtype=D) for _ in range(3))
    w = 0.25
    loss = make_distill_loss("regression", name, temperature=7.0, weight=w)  # temperature does not apply

    diff = student - target
    if name == "mse":
        hard = (diff**2).mean(1)
    else:  # huber, delta 1
        hard = torch.where(diff.abs() < 1, 0.5 * diff**2, diff.abs() - 0.5).mean(1)
    soft = ((student - teacher) ** 2).mean(1)
    torch.testing.assert_close(loss(student, target, teacher), (1 - w) * hard + w * soft)


def test_weight_zero_is_the_hard_loss_and_weight_one_ignores_the_labels():
    gen = _seeded(3)
    student, teacher = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    labels, other_labels = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([2, 2, 0, 0, 1])
    hard = torch.nn.functional.cross_entropy(student, labels, reduction="none")
    zero = make_distill_loss("classification", temperature=2.0, weight=0.0)
    assert torch.equal(zero(student, labels, teacher), hard)
    one = make_distill_loss("classification", temperature=2.0, weight=1.0)
    assert torch.equal(one(student, labels, teacher), one(student, other_labels, teacher))
    assert torch.equal(one(teacher, labels, teacher), torch.zeros(5))  # no divergence from itself
    assert not torch.equal(one(student, labels, teacher), torch.zeros(5))


# ------------------------------------------------------------------ training


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_weight_zero_trains_exactly_as_without_distillation(mlp, digits, without_timings):
    (X, y), val = digits
    teacher = torch.randn(len(X), 10, generator=_seeded(4))
    plain = Trainer(mlp(64, 10, dropout=0.2), TrainSpec(epochs=2, seed=5), task="classification")
    plain_history = plain.fit((X, y), val)
    spec = TrainSpec(epochs=2, seed=5, distill=DistillSpec(weight=0.0))
    mixed = Trainer(mlp(64, 10, dropout=0.2), spec, task="classification")
    mixed_history = mixed.fit((X, y), val, teacher=teacher)

    assert without_timings(mixed_history.epochs) == without_timings(plain_history.epochs)
    for key, value in _state(plain.model).items():
        assert torch.equal(mixed.model.state_dict()[key], value), key
    # ...and a weight above zero trains another model from the same start.
    spec = TrainSpec(epochs=2, seed=5, distill=DistillSpec(weight=0.5))
    other = Trainer(mlp(64, 10, dropout=0.2), spec, task="classification")
    other.fit((X, y), val, teacher=teacher)
    assert not torch.equal(other.model[0].weight, plain.model[0].weight)


def _linear_teacher(x: torch.Tensor, n_out: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """A fixed teacher's logits: a random linear map of the inputs (centred), every class the top one for
    some rows."""
    weights = torch.randn(x.shape[1], n_out, generator=_seeded(seed)) * scale
    return (x - x.mean(0)) @ weights


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_the_teacher_term_alone_teaches_the_teacher_despite_random_labels(mlp, digits, weight):
    (X, _), _ = digits
    teacher = _linear_teacher(X, 10, seed=6)
    assert len(set(teacher.argmax(1).tolist())) >= 8  # a teacher with varied answers
    random_labels = torch.randint(0, 10, (len(X),), generator=_seeded(7))
    spec = TrainSpec(
        lr=0.02, epochs=30, batch_size=64, schedule={"name": "cosine"}, distill=DistillSpec(weight=weight)
    )
    student = Trainer(mlp(64, 10, hidden=64), spec, task="classification")
    student.fit((X, random_labels), teacher=teacher)

    agreement = float((student.outputs(X).argmax(1) == teacher.argmax(1)).float().mean())
    if weight == 1.0:
        assert agreement >= 0.95
    else:  # the labels alone: the teacher's answers only by chance
        assert agreement < 0.5


def test_a_binary_student_learns_its_teacher_from_one_logit(mlp, digits):
    (X, _), _ = digits
    teacher = _linear_teacher(X, 1, seed=8, scale=3.0).flatten()  # [N]: one logit per row
    assert 0.2 < float((teacher > 0).float().mean()) < 0.8
    random_labels = torch.randint(0, 2, (len(X),), generator=_seeded(9))
    spec = TrainSpec(lr=0.01, epochs=30, batch_size=64, loss="bce", distill=DistillSpec(weight=1.0))
    student = Trainer(mlp(64, 1), spec, task="classification")
    student.fit((X, random_labels), teacher=teacher)
    agreement = float(((student.outputs(X).flatten() > 0) == (teacher > 0)).float().mean())
    assert agreement >= 0.95


def test_lbfgs_distils_a_linear_teacher_into_a_linear_student(regression):
    (X, _), _ = regression
    teacher = _linear_teacher(X, 1, seed=10) + 0.5
    random_targets = torch.randn(len(X), 1, generator=_seeded(11))
    spec = TrainSpec(optimizer="lbfgs", epochs=5, distill=DistillSpec(weight=1.0))
    student = Trainer(nn.Linear(20, 1), spec, task="regression")
    history = student.fit((X, random_targets), teacher=teacher)
    torch.testing.assert_close(student.outputs(X), teacher, atol=1e-3, rtol=1e-3)
    assert history.epochs[-1]["loss"] < 1e-5  # the logged loss is the distillation objective


def test_a_forecaster_follows_its_teacher_in_standardized_units(mlp, regression):
    (X, _), _ = regression
    teacher = torch.tanh(_linear_teacher(X, 3, seed=12, scale=0.3))  # [N, H]: a smooth 3-step "forecast"
    random_targets = torch.randn(len(X), 3, generator=_seeded(13))
    spec = TrainSpec(lr=0.01, epochs=40, batch_size=32, distill=DistillSpec(weight=1.0))
    student = Trainer(mlp(20, 3, hidden=64), spec, task="forecasting", target_scale=([10.0] * 3, [5.0] * 3))
    student.fit((X, random_targets), teacher=teacher)
    outputs = student.outputs(X)  # training units: the teacher's
    r2 = 1 - ((outputs - teacher) ** 2).sum() / ((teacher - teacher.mean(0)) ** 2).sum()
    assert float(r2) > 0.95


def test_a_resumed_fit_given_the_teacher_again_continues_exactly(mlp, digits, tmp_path):
    (X, y), val = digits
    teacher = _linear_teacher(X, 10, seed=14)
    spec = TrainSpec(epochs=4, seed=1, distill=DistillSpec(temperature=3.0, weight=0.7))
    whole = Trainer(mlp(64, 10, dropout=0.3), spec, task="classification")
    whole.fit((X, y), val, teacher=teacher)

    first = TrainSpec(epochs=2, seed=1, distill=DistillSpec(temperature=3.0, weight=0.7))
    Trainer(mlp(64, 10, dropout=0.3), first, task="classification", run_dir=tmp_path).fit(
        (X, y), val, teacher=teacher
    )
    resumed = Trainer(mlp(64, 10, dropout=0.3, seed=99), spec, task="classification")
    with pytest.raises(SpecError, match="got no teacher"):
        resumed.fit((X, y), val, resume_from=tmp_path / "checkpoint.pt")
    resumed.fit((X, y), val, resume_from=tmp_path / "checkpoint.pt", teacher=teacher)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key

    other = TrainSpec(epochs=4, seed=1, distill=DistillSpec(temperature=2.0, weight=0.7))
    with pytest.raises(SpecError, match="differs in distill"):
        Trainer(mlp(64, 10), other, task="classification").fit(
            (X, y), resume_from=tmp_path / "checkpoint.pt", teacher=teacher
        )


# ------------------------------------------------------------------ refusals


@pytest.fixture
def small() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(12, 5, generator=_seeded(15)), torch.arange(12) % 3


def test_a_distilling_fit_needs_its_teacher(small):
    trainer = Trainer(nn.Linear(5, 3), TrainSpec(epochs=1, distill=DistillSpec()), task="classification")
    with pytest.raises(SpecError, match=r"got no teacher; pass teacher= .* float \[12, 3\]"):
        trainer.fit(small)


def test_a_teacher_without_distill_is_refused(small):
    trainer = Trainer(nn.Linear(5, 3), TrainSpec(epochs=1), task="classification")
    with pytest.raises(SpecError, match=r"spec\.distill is None.*Set train\.distill"):
        trainer.fit(small, teacher=torch.zeros(12, 3))


@pytest.mark.parametrize(
    ("teacher", "error", "match"),
    [
        (torch.zeros(11, 3), SpecError, r"teacher has shape \[11, 3\]; expected .* \[12, 3\]"),
        (torch.zeros(12, 4), SpecError, r"teacher has shape \[12, 4\]"),
        (torch.zeros(12), SpecError, r"teacher has shape \[12\]"),
        (torch.zeros(12, 3, dtype=torch.int64), SpecError, "floating point torch.Tensor, got torch.int64"),
        ([[0.0] * 3] * 12, SpecError, "floating point torch.Tensor, got list"),
        (torch.full((12, 3), float("nan")), DataError, "NaN or infinite"),
    ],
)
def test_a_misshapen_teacher_is_refused(small, teacher, error, match):
    trainer = Trainer(nn.Linear(5, 3), TrainSpec(epochs=1, distill=DistillSpec()), task="classification")
    with pytest.raises(error, match=match):
        trainer.fit(small, teacher=teacher)


def test_a_one_output_teacher_may_be_a_vector():
    X, y = torch.randn(12, 5, generator=_seeded(16)), torch.randn(12, generator=_seeded(17))
    trainer = Trainer(nn.Linear(5, 1), TrainSpec(epochs=1, distill=DistillSpec()), task="regression")
    assert len(trainer.fit((X, y), teacher=torch.zeros(12, dtype=torch.float64)).epochs) == 1


def test_distill_refuses_augment_and_bad_values():
    with pytest.raises(ValidationError, match="teacher's outputs are computed once, on the unaugmented"):
        TrainSpec(distill=DistillSpec(), augment={"noise_std": 0.1})
    with pytest.raises(ValidationError, match="temperature"):
        DistillSpec(temperature=0.0)
    with pytest.raises(ValidationError, match="weight"):
        DistillSpec(weight=1.5)
    with pytest.raises(ValidationError, match="extra"):
        DistillSpec(alpha=0.5)
    assert "distill" not in TrainSpec.PER_MEMBER_FIELDS  # fused populations do not distill
