"""Bag-of-embeddings text models (``TextModel``, encoder 'bag') as fused populations: each member computes and
trains exactly as its own ``TextModel`` would."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from tests.fused.test_equivalence import assert_members_match
from torch import Tensor, nn

from tunelab.errors import SpecError
from tunelab.execute._pop_optimizer import make_population_optimizer
from tunelab.fused import PopAdamW, PopEmbedding, PopSGD, PopTextBag, Population, PopulationTrainer
from tunelab.fused._population import unsupported_reason
from tunelab.inputs import PAD_ID, TextInput
from tunelab.models import TextModel
from tunelab.models._specs import TextSpec
from tunelab.train import TrainSpec, make_optimizer

K = 3
LENGTH, VOCAB, CLASSES = 10, 40, 4


def text_input(features: int = 0, length: int = LENGTH) -> TextInput:
    """Document frequencies that differ by id, so weighted pooling starts from unequal token weights."""
    frequencies = tuple((7 * i) % 13 for i in range(VOCAB))
    return TextInput(
        length=length, vocab_size=VOCAB, features=features, document_frequency=frequencies, documents=20
    )


def build(spec: TextSpec, seed: int, *, features: int = 0, length: int = LENGTH) -> TextModel:
    """A TextModel initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TextModel(spec, text=text_input(features, length), output_dim=CLASSES)


def texts(n: int, *, features: int = 0, length: int = LENGTH, seed: int = 0) -> Tensor:
    """``[n, length + features]``: ids right-padded with PAD_ID (some out of range: read as UNKNOWN), the
    first rows an empty text and a one-token text, repeated tokens common (a small vocabulary)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(-2, VOCAB + 5, (n, length), generator=generator)
    ids[ids == PAD_ID] = 3
    lengths = torch.randint(0, length + 1, (n,), generator=generator)
    lengths[0], lengths[1] = 0, 1
    ids[torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD_ID
    table = torch.randn(n, features, generator=generator)
    return torch.cat([ids.float(), table], dim=1)


def labels(n: int, seed: int = 1) -> Tensor:
    return torch.randint(0, CLASSES, (n,), generator=torch.Generator().manual_seed(seed))


# Bigrams have no token weights: TextSpec refuses pooling "weighted" with ngrams=2.
POOLINGS = [(1, "weighted")] + [(n, p) for n in (1, 2) for p in ("mean", "max", "mean_max")]


@pytest.mark.parametrize("features", [0, 3])
@pytest.mark.parametrize("dense", [[], [7, 5]])
@pytest.mark.parametrize(("ngrams", "pooling"), POOLINGS)
def test_forward_matches_each_text_model(ngrams, pooling, dense, features):
    """Eval mode: member k's output is TextModel k's (different inits, different dropout rates)."""
    rates = [0.1, 0.3, 0.5]
    models = [
        build(
            TextSpec(ngrams=ngrams, buckets=17, pooling=pooling, dense=dense, dropout=rate, embedding_dim=6),
            seed=k,
            features=features,
        ).eval()
        for k, rate in enumerate(rates)
    ]
    population = Population.from_modules(models).eval()
    x = texts(24, features=features)
    out = population(x)
    assert out.shape == (K, 24, CLASSES)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(population.dropout_rates(), torch.tensor(rates, dtype=torch.float64))
    assert isinstance(population.layers[0], PopTextBag)


@pytest.mark.parametrize("ngrams", [1, 2])
def test_a_shorter_max_length_reads_the_same_first_tokens_in_the_population(ngrams):
    models = [
        build(
            TextSpec(ngrams=ngrams, buckets=17, pooling="mean_max", max_length=5), seed=k, features=2
        ).eval()
        for k in range(K)
    ]
    population = Population.from_modules(models).eval()
    x = texts(16, features=2)
    out = population(x)
    for k, model in enumerate(models):
        assert model.read == 5
        torch.testing.assert_close(out[k], model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max"])
def test_empty_texts_pool_to_zeros_and_match(pooling):
    """All-padding texts (and a one-token text with bigrams: no bigram) give the models' outputs; with no
    hidden layer, an empty text's output is the final layer's bias."""
    models = [build(TextSpec(ngrams=2, buckets=11, pooling=pooling), seed=k).eval() for k in range(K)]
    population = Population.from_modules(models).eval()
    x = torch.zeros(3, LENGTH)
    x[2, 0] = 5.0
    out = population(x)
    for k, model in enumerate(models):
        torch.testing.assert_close(out[k], model(x), atol=1e-6, rtol=1e-6)
        head = cast(nn.Linear, model.head[-1])
        torch.testing.assert_close(out[k, :2], head.bias.detach().expand(2, CLASSES), atol=1e-6, rtol=1e-6)


def test_bigrams_with_single_token_length():
    """length 1 leaves no bigram position at all."""
    models = [
        build(TextSpec(ngrams=2, buckets=5, pooling="mean_max"), seed=k, length=1).eval() for k in (0, 1)
    ]
    population = Population.from_modules(models).eval()
    x = torch.tensor([[0.0], [4.0], [99.0]])
    for k, model in enumerate(models):
        torch.testing.assert_close(population(x)[k], model(x), atol=1e-6, rtol=1e-6)


def _alone_step(model: TextModel, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


@pytest.mark.parametrize(
    ("ngrams", "pooling", "features", "dense"),
    [
        (1, "mean", 0, []),
        (1, "max", 2, [8]),
        (2, "mean_max", 2, [8]),
        (2, "max", 0, []),
        (1, "weighted", 2, [8]),
    ],
)
def test_training_steps_match_adamw_on_each_model(ngrams, pooling, features, dense):
    """Three steps of the population (PopAdamW, per-member lr / weight decay / beta1) equal three steps of
    each TextModel with torch.optim.AdamW. Float64, as tests/fused/test_equivalence.py: the sums run in a
    different order, and Adam's first steps amplify that rounding near zero gradients."""
    check_adamw_steps(ngrams, pooling, features, dense, device="cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max"])
def test_training_steps_match_adamw_on_cuda(pooling):
    """The same on a GPU (foreach optimizer, the step recorded as a CUDA graph); deselected without one."""
    assert torch.cuda.is_available(), "this test needs a CUDA GPU"
    check_adamw_steps(2, pooling, 2, [8], device="cuda")


def check_adamw_steps(ngrams: int, pooling: str, features: int, dense: list[int], *, device: str) -> None:
    spec = TextSpec(ngrams=ngrams, buckets=13, pooling=pooling, dense=dense, embedding_dim=6)
    hparams: dict[str, Any] = {
        "lr": [1e-2, 3e-3, 3e-2],
        "beta1": [0.9, 0.8, 0.5],
        "weight_decay": [0.0, 1e-2, 1e-1],
    }
    x, y = texts(16, features=features).to(device, torch.float64), labels(16).to(device)
    models = [build(spec, seed=k, features=features).to(device, torch.float64) for k in range(K)]
    population = Population.from_modules(models)
    trainer = PopulationTrainer(population, PopAdamW(population.parameters(), n_members=K, **hparams))
    alone = [build(spec, seed=k, features=features).to(device, torch.float64) for k in range(K)]
    optimizers = [
        torch.optim.AdamW(
            model.parameters(),
            lr=hparams["lr"][k],
            betas=(hparams["beta1"][k], 0.999),
            weight_decay=hparams["weight_decay"][k],
        )
        for k, model in enumerate(alone)
    ]
    for step in range(3):
        rows = slice(step * 5, step * 5 + 8)
        trainer.train_step(x[rows], y[rows])
        for model, optimizer in zip(alone, optimizers, strict=True):
            _alone_step(model, optimizer, x[rows], y[rows])
    initial = build(spec, seed=0, features=features).to(device, torch.float64).state_dict()
    assert not torch.allclose(
        member(population, 0).state_dict()["embedding.weight"], initial["embedding.weight"]
    )
    assert_members_match(population, alone, atol=1e-9, rtol=1e-7)
    for k in range(K):  # the padding rows stay zero
        assert torch.count_nonzero(member(population, k).embedding.weight[PAD_ID]) == 0


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max"])
@pytest.mark.parametrize("ngrams", [1, 2])
def test_embedding_gradients_match_each_text_model(ngrams, pooling):
    """The gradient of a loss on every member's output reaches each member's tables as it reaches the
    TextModel's own (texts with repeated tokens, unknown ids, an empty and a one-token text)."""
    spec = TextSpec(ngrams=ngrams, buckets=7, pooling=pooling, dense=[5], embedding_dim=4)
    models = [build(spec, seed=k, features=2).double() for k in range(K)]
    population = Population.from_modules(models)
    x = texts(20, features=2).double()
    weights = torch.randn(K, 20, CLASSES, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (population(x) * weights).sum().backward()
    for k, model in enumerate(models):
        (model(x) * weights[k]).sum().backward()
    bag = bag_layer(population)
    pairs = [(bag.embedding, "embedding")]
    if bag.ngram_embedding is not None:
        pairs.append((bag.ngram_embedding, "ngram_embedding"))
    for table, name in pairs:
        assert table.weight.grad is not None
        for k, model in enumerate(models):
            expected = model.get_parameter(f"{name}.weight").grad
            torch.testing.assert_close(table.weight.grad[k], expected, atol=1e-12, rtol=1e-9)


def test_sgd_momentum_step_matches_and_padding_row_gets_no_gradient():
    spec = TextSpec(ngrams=2, buckets=13, pooling="mean_max", dense=[8], embedding_dim=6)
    x, y = texts(16, features=2).double(), labels(16)
    models = [build(spec, seed=k, features=2).double() for k in range(K)]
    population = Population.from_modules(models)
    lrs, momenta = [0.1, 0.05, 0.2], [0.0, 0.9, 0.5]
    trainer = PopulationTrainer(
        population, PopSGD(population.parameters(), n_members=K, lr=lrs, momentum=momenta, weight_decay=1e-2)
    )
    alone = [build(spec, seed=k, features=2).double() for k in range(K)]
    optimizers = [
        torch.optim.SGD(model.parameters(), lr=lrs[k], momentum=momenta[k], weight_decay=1e-2)
        for k, model in enumerate(alone)
    ]
    for rows in (slice(0, 8), slice(8, 16)):
        trainer.train_step(x[rows], y[rows])
        for model, optimizer in zip(alone, optimizers, strict=True):
            _alone_step(model, optimizer, x[rows], y[rows])
    assert_members_match(population, alone, atol=1e-9, rtol=1e-7)
    embedding = bag_layer(population).embedding
    assert embedding.weight.grad is None or torch.count_nonzero(embedding.weight.grad[:, PAD_ID]) == 0
    population.zero_grad()
    population(x).sum().backward()
    assert embedding.weight.grad is not None
    assert torch.count_nonzero(embedding.weight.grad[:, PAD_ID]) == 0
    assert torch.count_nonzero(embedding.weight.grad[:, 1:]) > 0


def test_grouped_optimizer_decays_embeddings_as_the_single_trainer():
    """make_population_optimizer's weights group ([K, ...] with two dims per member) holds the [K, rows, D]
    tables, as the single trainer's make_optimizer decays nn.Embedding weights: a step matches."""
    spec = TextSpec(ngrams=2, buckets=13, pooling="mean", dense=[8], embedding_dim=6)
    trains = [
        TrainSpec(optimizer="adamw", lr=lr, weight_decay=decay)
        for lr, decay in [(1e-2, 0.0), (3e-3, 0.1), (3e-2, 0.5)]
    ]
    x, y = texts(8).double(), labels(8)
    population = Population.from_modules([build(spec, seed=k).double() for k in range(K)])
    optimizer = make_population_optimizer(population, trains)
    decayed = {id(p) for p in getattr(optimizer, "decayed").params}  # noqa: B009 (DecayGroups)
    bag = bag_layer(population)
    assert bag.ngram_embedding is not None
    assert id(bag.embedding.weight) in decayed
    assert id(bag.ngram_embedding.weight) in decayed
    PopulationTrainer(population, optimizer).train_step(x, y)
    alone = [build(spec, seed=k).double() for k in range(K)]
    for model, train in zip(alone, trains, strict=True):
        _alone_step(model, make_optimizer(model.parameters(), train), x, y)
    assert_members_match(population, alone, atol=1e-9, rtol=1e-7)


def test_extracted_member_reproduces_population_output():
    """After training with dropout, member(k) is a standalone TextModel giving the population's output for
    k; load_member puts a model back into a slot."""
    spec = TextSpec(ngrams=2, buckets=13, pooling="mean_max", dense=[8], dropout=0.3, embedding_dim=6)
    models = [build(spec, seed=k, features=2) for k in range(K)]
    population = Population.from_modules(models, seed=3)
    trainer = PopulationTrainer(population, PopAdamW(population.parameters(), n_members=K, lr=1e-2))
    trainer.set_hparams({"dropout": [0.0, 0.2, 0.5]})
    x, y = texts(32, features=2), labels(32)
    losses = trainer.fit(x, y, n_epochs=2, batch_size=8, seed=1)
    assert all(bool(torch.isfinite(loss).all()) for loss in losses)
    population.eval()
    out = population(x)
    for k in range(K):
        extracted = member(population, k)
        assert not extracted.training
        torch.testing.assert_close(extracted(x), out[k], atol=1e-5, rtol=1e-5)
    assert cast(nn.Dropout, member(population, 2).head[0]).p == pytest.approx(0.5)
    population.load_member(0, models[1])
    torch.testing.assert_close(population(x)[0], models[1].eval()(x), atol=1e-5, rtol=1e-5)
    trainer.shrink([2, 0])
    torch.testing.assert_close(population(x)[0], out[2], atol=1e-6, rtol=1e-6)


def test_frozen_embedding_stays_fixed_and_mixed_freezing_is_refused():
    spec = TextSpec(pooling="mean", embedding_dim=6)
    models = [build(spec, seed=k) for k in range(K)]
    for model in models:
        model.embedding.weight.requires_grad_(False)
    population = Population.from_modules(models)
    table = bag_layer(population).embedding.weight
    before = table.detach().clone()
    PopulationTrainer(population, PopAdamW(population.parameters(), n_members=K, lr=1e-1)).train_step(
        texts(8), labels(8)
    )
    assert torch.equal(table, before)
    assert not member(population, 0).embedding.weight.requires_grad
    models[1].embedding.weight.requires_grad_(True)
    with pytest.raises(SpecError, match="freeze"):
        Population.from_modules(models)


@pytest.mark.parametrize("encoder", ["cnn", "lstm", "gru"])
def test_other_text_encoders_are_unsupported_with_reason(encoder):
    spec = TextSpec(encoder=encoder, kernel_sizes=[2], channels=4, hidden_size=4)
    model = build(spec, seed=0)
    reason = unsupported_reason(model)
    assert reason is not None
    assert f"'{encoder}' encoder" in reason
    with pytest.raises(SpecError, match=f"'{encoder}' encoder"):
        Population.from_modules([model, build(spec, seed=1)])


def test_bag_text_model_is_supported():
    assert unsupported_reason(build(TextSpec(ngrams=2, dense=[4], dropout=0.1), seed=0)) is None


def test_pop_embedding_gathers_each_members_table():
    tables = [torch.nn.Embedding(9, 4, padding_idx=0) for _ in range(K)]
    with torch.no_grad():
        tables[1].weight[0] = 1.0  # a padding row set by hand is read, but gets no gradient
    layer = PopEmbedding(K, tables[0])
    for k, table in enumerate(tables):
        layer.load_member(k, table)
    ids = torch.tensor([[0, 3, 8], [5, 0, 0]])
    out = layer(ids)
    assert out.shape == (K, 2, 3, 4)
    for k, table in enumerate(tables):
        torch.testing.assert_close(out[k], table(ids))
    out.sum().backward()
    assert layer.weight.grad is not None
    assert torch.count_nonzero(layer.weight.grad[:, 0]) == 0
    torch.testing.assert_close(layer.weight.grad[:, 3], torch.ones(K, 4))


def member(population: Population, k: int) -> TextModel:
    extracted = population.member(k)
    assert isinstance(extracted, TextModel)
    return extracted


def bag_layer(population: Population) -> PopTextBag:
    layer = population.layers[0]
    assert isinstance(layer, PopTextBag)
    return layer
