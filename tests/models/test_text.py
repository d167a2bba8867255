"""The text family: shapes, masking, padding invariance, vocabulary capping, pretrained vectors, exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tunelab.errors import SpecError
from tunelab.inputs import PAD_ID, UNKNOWN_ID, TextInput
from tunelab.models._text import TextModel, TextSpec, _masked_pool, build_text

ENCODERS = ["bag", "cnn", "lstm", "gru"]
SMALL = {"embedding_dim": 6, "channels": 5, "hidden_size": 7, "kernel_sizes": [2, 3, 5]}


def _build(spec: TextSpec, text: TextInput, *, output_dim: int = 3, seed: int = 0) -> TextModel:
    """``build_text`` with a seeded init that leaves the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_text(spec, input_shape=(text.width,), output_dim=output_dim, text=text)


def _rows(texts: list[list[int]], length: int, features: list[list[float]] | None = None) -> torch.Tensor:
    """Samples ``[N, length + F]``: each text's ids right-padded with ``PAD_ID``, then its features."""
    rows = []
    for index, ids in enumerate(texts):
        row = [float(i) for i in ids] + [float(PAD_ID)] * (length - len(ids))
        rows.append(row + (features[index] if features else []))
    return torch.tensor(rows, dtype=torch.float32)


_FREQUENCIES = tuple(max(0, 40 - 2 * i) for i in range(30))  # common ids first, as the tokenizer numbers them
TEXTS = [[5, 6, 7, 8, 9, 10, 11, 12], [], [3, 4], [2, 19, 3, 9, 9]]  # long, empty, shorter than k=5, repeat
FEATURES = [[0.5, -1.0], [2.0, 0.0], [-0.3, 0.3], [1.0, 1.0]]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("features", [0, 2])
@pytest.mark.parametrize("pooling", ["mean", "mean_max"])
def test_output_shape_for_every_encoder(encoder, features, pooling):
    text = TextInput(length=9, vocab_size=20, features=features)
    spec = TextSpec(encoder=encoder, pooling=pooling, dense=[4], **SMALL)
    model = _build(spec, text, output_dim=3)
    x = _rows(TEXTS, 9, FEATURES if features else None)
    out = model(x)
    assert out.shape == (4, 3)
    assert torch.isfinite(out).all()
    widths = {"bag": 6, "cnn": 5 * 3, "lstm": 7, "gru": 7}
    expected = widths[encoder] * (1 if encoder == "cnn" or pooling == "mean" else 2) + features
    assert model.head[0].in_features == expected


@pytest.mark.parametrize(
    ("encoder", "pooling"),
    [(e, p) for e in ENCODERS for p in ("mean", "max", "mean_max")],
)
def test_trailing_padding_does_not_change_the_output(encoder, pooling):
    short, long = (
        TextInput(length=8, vocab_size=20, features=2),
        TextInput(length=15, vocab_size=20, features=2),
    )
    spec = TextSpec(encoder=encoder, pooling=pooling, dense=[4], **SMALL)
    model_short = _build(spec, short).eval()
    model_long = _build(spec, long, seed=1).eval()
    model_long.load_state_dict(model_short.state_dict())  # no weight depends on the length
    texts = [ids[:8] for ids in TEXTS]
    with torch.no_grad():
        expected = model_short(_rows(texts, 8, FEATURES))
        got = model_long(_rows(texts, 15, FEATURES))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_backward_direction_reads_the_padding():
    """Documented: bidirectional recurrent encoders are not padding-invariant (no packed sequences)."""
    short, long = TextInput(length=4, vocab_size=20), TextInput(length=12, vocab_size=20)
    spec = TextSpec(encoder="gru", bidirectional=True, **SMALL)
    model_short, model_long = _build(spec, short).eval(), _build(spec, long).eval()
    with torch.no_grad():
        assert not torch.allclose(model_short(_rows([[3, 4]], 4)), model_long(_rows([[3, 4]], 12)), atol=1e-4)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max", "weighted"])
def test_an_empty_text_pools_to_zeros(encoder, pooling):
    text = TextInput(length=6, vocab_size=20, features=2)
    model = _build(TextSpec(encoder=encoder, pooling=pooling, dense=[4], **SMALL), text).eval()
    x = _rows([[], []], 6, [[0.5, -1.0], [0.0, 0.0]])
    with torch.no_grad():
        out = model(x)
        width = model.head[0].in_features - 2
        expected = model.head(torch.cat([torch.zeros(2, width), x[:, 6:]], dim=1))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected)  # the pooled text vector is exactly zero


def test_an_empty_text_has_finite_gradients():
    text = TextInput(length=5, vocab_size=20)
    for encoder in ENCODERS:
        model = _build(TextSpec(encoder=encoder, pooling="mean_max", **SMALL), text)
        model(_rows([[], [4, 5]], 5)).sum().backward()
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None
            assert torch.isfinite(parameter.grad).all(), (encoder, name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_masked_pooling_in_every_float_dtype(dtype):
    """Autocast runs the encoders in float16: the max's fill for padded positions must fit it."""
    values = torch.tensor([[[-5.0, 1.0], [7.0, -2.0], [9.0, 9.0]], [[3.0, 3.0], [4.0, 4.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    pooled = _masked_pool(values.to(dtype), mask, "mean_max")
    expected = torch.tensor([[1.0, -0.5, 7.0, 1.0], [0.0, 0.0, 0.0, 0.0]], dtype=dtype)
    torch.testing.assert_close(pooled, expected)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_ids_beyond_the_spec_vocabulary_read_as_unknown(encoder):
    text = TextInput(length=6, vocab_size=20)
    model = _build(TextSpec(encoder=encoder, vocab_size=5, **SMALL), text).eval()
    assert model.embedding.num_embeddings == 5
    with torch.no_grad():
        got = model(_rows([[2, 7, 12, 3, 19, 4]], 6))
        expected = model(_rows([[2, UNKNOWN_ID, UNKNOWN_ID, 3, UNKNOWN_ID, 4]], 6))
        assert not torch.allclose(model(_rows([[2, 2, 2, 3, 2, 4]], 6)), expected)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_vocab_size_larger_than_the_data_is_capped_and_stray_ids_read_as_unknown():
    text = TextInput(length=4, vocab_size=20)
    model = _build(TextSpec(vocab_size=1000, **SMALL), text).eval()
    assert model.embedding.num_embeddings == 20
    assert _build(TextSpec(**SMALL), text).embedding.num_embeddings == 20
    with torch.no_grad():
        torch.testing.assert_close(model(_rows([[3, 25, -2]], 4)), model(_rows([[3, 1, 1]], 4)))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_gradients_reach_the_embeddings_of_the_tokens_read(encoder):
    text = TextInput(length=6, vocab_size=20, features=1)
    # no hidden layer: a dead ReLU or a dropped unit could cut a sample's path
    model = _build(TextSpec(encoder=encoder, pooling="mean", **SMALL), text)
    model(_rows([[3, 4, 5], [6]], 6, [[1.0], [2.0]])).sum().backward()
    grad = model.embedding.weight.grad
    assert grad is not None
    used = grad.abs().sum(dim=1) > 0
    assert used[[3, 4, 5, 6]].all()
    assert not used[PAD_ID]
    assert not used[[2, 7, 19]].any()
    assert model.embedding.weight[PAD_ID].abs().sum() == 0


def test_dropout_draws_in_training_only():
    text = TextInput(length=6, vocab_size=20)
    model = _build(TextSpec(dense=[16], dropout=0.5, **SMALL), text)
    x = _rows([[3, 4, 5]] * 8, 6)
    torch.manual_seed(0)
    train_out = model(x)
    assert not torch.allclose(train_out[0], train_out[1])
    model.eval()
    eval_out = model(x)
    torch.testing.assert_close(eval_out[0], eval_out[1])


# --- pretrained word vectors -------------------------------------------------------------------------------

VOCABULARY = ("<pad>", "<unk>", "the", "cat", "dog", "zebra")


def _vectors_file(path: Path, *, header: bool = True, dim: int = 4) -> Path:
    lines = [f"4 {dim}"] if header else []
    rows = {"the": 0.1, "apple": 9.0, "cat": -0.5, "<pad>": 3.0}
    lines += [" ".join([word] + [f"{value + j:.2f}" for j in range(dim)]) for word, value in rows.items()]
    lines.append(" ".join(["the"] + ["7.0"] * dim))  # a repeated token: the first line wins
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("header", [True, False])
def test_pretrained_vectors_replace_the_rows_of_known_tokens(tmp_path: Path, header):
    text = TextInput(length=5, vocab_size=6, vocabulary=VOCABULARY)
    random_model = _build(TextSpec(embedding_dim=4), text)
    path = _vectors_file(tmp_path / "vectors.txt", header=header)
    model = _build(TextSpec(embedding_dim=4, pretrained=str(path)), text)
    weight = model.embedding.weight.detach()
    torch.testing.assert_close(weight[2], torch.tensor([0.1, 1.1, 2.1, 3.1]))  # the
    torch.testing.assert_close(weight[3], torch.tensor([-0.5, 0.5, 1.5, 2.5]))  # cat
    assert model.pretrained_hits == 2
    assert weight[PAD_ID].abs().sum() == 0  # the padding row stays zero, whatever the file says
    # tokens missing from the file keep their random init
    torch.testing.assert_close(weight[[1, 4, 5]], random_model.embedding.weight.detach()[[1, 4, 5]])
    assert model.embedding.weight.requires_grad


def test_pretrained_vectors_beyond_the_spec_vocabulary_are_not_read(tmp_path: Path):
    text = TextInput(length=5, vocab_size=6, vocabulary=VOCABULARY)
    path = _vectors_file(tmp_path / "vectors.txt")
    model = _build(TextSpec(embedding_dim=4, pretrained=str(path), vocab_size=3), text)
    assert model.embedding.num_embeddings == 3
    assert model.pretrained_hits == 1  # "the" (id 2); "cat" (id 3) is cut


def test_frozen_pretrained_embeddings_do_not_move(tmp_path: Path):
    text = TextInput(length=5, vocab_size=6, vocabulary=VOCABULARY)
    path = _vectors_file(tmp_path / "vectors.txt")
    model = _build(TextSpec(embedding_dim=4, pretrained=str(path), freeze_embedding=True, dense=[4]), text)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.1)
    model(_rows([[2, 3, 4]], 5)).pow(2).sum().backward()
    optimizer.step()
    assert not model.embedding.weight.requires_grad
    torch.testing.assert_close(model.embedding.weight.detach(), before["embedding.weight"], rtol=0, atol=0)
    assert not torch.equal(model.head[0].weight, before["head.0.weight"])  # the rest trains


def test_a_vector_file_of_another_dimension_is_a_spec_error(tmp_path: Path):
    text = TextInput(length=5, vocab_size=6, vocabulary=VOCABULARY)
    for header in (True, False):
        path = _vectors_file(tmp_path / f"vectors{header}.txt", header=header, dim=3)
        with pytest.raises(SpecError, match=r"3 dimensions, but embedding_dim is 4.*embedding_dim: 3"):
            _build(TextSpec(embedding_dim=4, pretrained=str(path)), text)


def test_a_malformed_vector_file_is_a_spec_error(tmp_path: Path):
    text = TextInput(length=5, vocab_size=6, vocabulary=VOCABULARY)
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("the 1 2 3 4\ncat 1 2 3\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"line 2 .* holds 3 values"):
        _build(TextSpec(embedding_dim=4, pretrained=str(ragged)), text)
    words = tmp_path / "words.txt"
    words.write_text("the 1 2 x 4\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"line 1 .* not a number"):
        _build(TextSpec(embedding_dim=4, pretrained=str(words)), text)
    with pytest.raises(SpecError, match="does not exist"):
        _build(TextSpec(embedding_dim=4, pretrained=str(tmp_path / "missing.txt")), text)


def test_pretrained_vectors_need_the_vocabulary(tmp_path: Path):
    path = _vectors_file(tmp_path / "vectors.txt")
    with pytest.raises(SpecError, match="vocabulary is not at hand"):
        _build(TextSpec(embedding_dim=4, pretrained=str(path)), TextInput(length=5, vocab_size=6))


# --- the boundary ------------------------------------------------------------------------------------------


def test_build_text_needs_a_text_input_of_the_data_shape():
    spec = TextSpec()
    with pytest.raises(SpecError, match="model type 'text' needs a text column"):
        build_text(spec, input_shape=(12,), output_dim=2, text=None)
    text = TextInput(length=10, vocab_size=50, features=2)
    with pytest.raises(SpecError, match=r"shape \(12,\).*shape \(10,\)"):
        build_text(spec, input_shape=(10,), output_dim=2, text=text)
    assert isinstance(build_text(spec, input_shape=(12,), output_dim=2, text=text), TextModel)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"freeze_embedding": True}, "freeze_embedding=True keeps pretrained"),
        ({"kernel_sizes": []}, "at least 1 item"),
        ({"kernel_sizes": [3, 0]}, "greater than or equal to 1"),
        ({"kernel_sizes": [3, 5, 3]}, r"distinct convolution widths.*\[3, 5\]"),
        ({"vocab_size": 1}, "greater than or equal to 2"),
        ({"pretrained": "  "}, "path of a word-vector file"),
        ({"encoder": "transformer"}, "'bag', 'cnn', 'lstm' or 'gru'"),
        ({"pooling": "last"}, "'mean', 'max', 'mean_max' or 'weighted'"),
        ({"pooling": "weighted", "ngrams": 2}, "hashed bigrams .* have none"),
        ({"dropout": 1.0}, "less than 1"),
        ({"n_layers": 0}, "greater than or equal to 1"),
        ({"hidden": [8]}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_say_what_is_wrong(fields, message):
    with pytest.raises(ValidationError, match=message):
        TextSpec(**fields)


def test_spec_defaults_and_per_member_fields():
    spec = TextSpec()
    assert (spec.type, spec.encoder, spec.embedding_dim, spec.kernel_sizes, spec.pooling) == (
        "text",
        "bag",
        64,
        [3, 4, 5],
        "mean",
    )
    assert set(spec.PER_MEMBER_FIELDS) == {"dropout", "init", "init_gain"}
    assert TextSpec(init="kaiming_normal").init == "he_normal"


# --- exports -----------------------------------------------------------------------------------------------

EXPORT_TEXTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [], [3], [2, 30, 4, 4]]  # long, empty, short, out of vocab


def _export_model(encoder: str) -> tuple[TextModel, torch.Tensor]:
    text = TextInput(length=10, vocab_size=20, features=2)
    spec = TextSpec(
        encoder=encoder, pooling="mean_max", bidirectional=encoder == "gru", dense=[4], dropout=0.2, **SMALL
    )
    return _build(spec, text).eval(), _rows(EXPORT_TEXTS, 10, FEATURES)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_export_traces_the_model(encoder):
    from tunelab.export._script import compile_torchscript

    model, x = _export_model(encoder)
    compiled, how = compile_torchscript(model, x)
    assert how == "trace"  # dropout > 0: scripting (the fallback) cannot compile ByteDropout
    assert compiled is not None
    with torch.no_grad():
        for batch in (x, x[1:3]):
            torch.testing.assert_close(compiled(batch), model(batch), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_without_dropout_the_model_also_scripts(encoder):
    from tunelab.export._script import quiet_torchscript

    text = TextInput(length=7, vocab_size=20, features=1)
    model = _build(TextSpec(encoder=encoder, pooling="mean_max", **SMALL), text).eval()
    x = _rows([[3, 4, 5], [], [6] * 7], 7, [[1.0], [0.0], [-1.0]])
    with quiet_torchscript():
        scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_onnx_computes_what_the_model_computes(tmp_path: Path, encoder):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from tunelab.export._onnx import export_onnx

    model, x = _export_model(encoder)
    export_onnx(model, x, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for batch in (x, x[1:2], x[[0, 3]]):  # the batch axis is dynamic
            (got,) = session.run(["output"], {"input": batch.numpy()})
            np.testing.assert_allclose(got, model(batch).numpy(), rtol=1e-4, atol=1e-4)


def test_bigrams_make_a_bag_read_word_order():
    text = TextInput(length=6, vocab_size=20)
    swapped = _rows([[5, 6, 7], [6, 5, 7]], 6)
    plain = _build(TextSpec(encoder="bag", **SMALL), text).eval()
    bigram = _build(TextSpec(encoder="bag", ngrams=2, buckets=50, **SMALL), text).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(swapped)[0], plain(swapped)[1])  # a bag of words: order is lost
        assert not torch.allclose(bigram(swapped)[0], bigram(swapped)[1])  # (5, 6) is not (6, 5)
    assert bigram.ngram_embedding is not None
    assert bigram.ngram_embedding.num_embeddings == 50


def test_bigrams_count_only_pairs_of_real_tokens():
    text = TextInput(length=8, vocab_size=20)
    model = _build(TextSpec(encoder="bag", ngrams=2, buckets=64, **SMALL), text).eval()
    assert model.ngram_embedding is not None
    one = _rows([[5]], 8)  # a single token has no pair: the pooled mean is its own embedding
    with torch.no_grad():
        expected = model.head(model.embedding.weight[5][None])
        torch.testing.assert_close(model(one), expected)
        # two tokens: the mean of both embeddings and their one hashed pair
        pair = (5 * 1000003 + 6) % 64
        mean = (
            model.embedding.weight[5] + model.embedding.weight[6] + model.ngram_embedding.weight[pair]
        ) / 3
        torch.testing.assert_close(model(_rows([[5, 6]], 8)), model.head(mean[None]))


def test_bigram_bags_export_to_onnx(tmp_path: Path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from tunelab.export._onnx import export_onnx

    text = TextInput(length=10, vocab_size=20, features=2)
    model = _build(TextSpec(encoder="bag", ngrams=2, buckets=97, dropout=0.2, **SMALL), text).eval()
    x = _rows(EXPORT_TEXTS, 10, FEATURES)
    export_onnx(model, x, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        (got,) = session.run(["output"], {"input": x.numpy()})
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max", "weighted"])
def test_the_embedding_bag_kernel_computes_the_masked_pooling(pooling, monkeypatch):
    text = TextInput(length=12, vocab_size=30, features=2, document_frequency=_FREQUENCIES, documents=40)
    model = _build(TextSpec(encoder="bag", pooling=pooling, **SMALL), text)
    x = _rows([[5, 6, 7, 5, 9], [], [3], [29, 28, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]], 12, FEATURES)
    y = torch.tensor([0, 1, 2, 0])
    assert model._bag_kernel()  # eager: embedding_bag

    def outputs_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        out = model(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        assert model.embedding.weight.grad is not None
        return out.detach(), model.embedding.weight.grad.clone()

    fast = outputs_and_gradient()
    if model.token_log_weight is not None:  # the token weights learn through both paths alike
        assert model.token_log_weight.grad is not None
        weight_grad = model.token_log_weight.grad.clone()
    monkeypatch.setattr(model, "_bag_kernel", lambda: False)  # the masked pooling, as traced and exported
    masked = outputs_and_gradient()
    torch.testing.assert_close(fast[0], masked[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast[1], masked[1], rtol=1e-5, atol=1e-7)
    assert fast[0][1, :].isfinite().all()  # the empty text
    if model.token_log_weight is not None:
        # zero_grad set .grad to None, so this is the masked path's own gradient
        assert model.token_log_weight.grad is not None
        torch.testing.assert_close(weight_grad, model.token_log_weight.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_max_length_reads_only_the_first_tokens(encoder):
    long = TextInput(length=10, vocab_size=20, features=2)
    short = TextInput(length=4, vocab_size=20, features=2)
    spec = TextSpec(encoder=encoder, pooling="mean_max", **SMALL)
    cut = _build(spec.model_copy(update={"max_length": 4}), long).eval()
    reference = _build(spec, short).eval()
    reference.load_state_dict(cut.state_dict())  # the weights do not depend on the length
    x = _rows(EXPORT_TEXTS, 10, FEATURES)
    x_short = torch.cat([x[:, :4], x[:, 10:]], dim=1)  # the first 4 ids, then the same table features
    with torch.no_grad():
        torch.testing.assert_close(cut(x), reference(x_short), rtol=1e-5, atol=1e-6)
    assert _build(spec.model_copy(update={"max_length": 99}), long).read == 10  # capped at the data's


# --- weighted pooling --------------------------------------------------------------------------------------


def test_weighted_pooling_starts_at_the_inverse_document_frequency():
    """Token weights start at 1 + ln((1 + n) / (1 + df)): a rare token weighs more than a common one, and a
    text of the two pools nearer the rare token's embedding than the plain mean does."""
    text = TextInput(length=4, vocab_size=30, document_frequency=_FREQUENCIES, documents=40)
    model = _build(TextSpec(encoder="bag", pooling="weighted", **SMALL), text).eval()
    assert model.token_log_weight is not None
    weights = model.token_log_weight.detach().exp()
    expected = [1.0 + np.log(41 / (1 + df)) for df in _FREQUENCIES]
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    common, rare = 3, 25  # document frequencies 34 and 0
    x = _rows([[common, rare]], 4)
    table = model.embedding.weight.detach()
    pooled = (weights[common] * table[common] + weights[rare] * table[rare]) / (
        weights[common] + weights[rare]
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(pooled.unsqueeze(0)))
    assert weights[rare] > 2 * weights[common]


def test_weighted_pooling_without_frequencies_is_the_mean():
    """A text input without document frequencies (a loaded model's, whose weights come from its state)
    starts every weight at 1: the plain mean."""
    text = TextInput(length=6, vocab_size=20)
    weighted = _build(TextSpec(encoder="bag", pooling="weighted", **SMALL), text).eval()
    mean = _build(TextSpec(encoder="bag", pooling="mean", **SMALL), text).eval()
    x = _rows([[3, 4, 4, 9], [], [7]], 6)
    with torch.no_grad():
        torch.testing.assert_close(weighted(x), mean(x))


@pytest.mark.parametrize("encoder", ["bag", "gru"])
def test_weighted_pooling_traces_scripts_and_exports_to_onnx(tmp_path: Path, encoder):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from tunelab.export._onnx import export_onnx
    from tunelab.export._script import compile_torchscript, quiet_torchscript

    text = TextInput(length=10, vocab_size=20, features=2, document_frequency=_FREQUENCIES[:20], documents=40)
    model = _build(TextSpec(encoder=encoder, pooling="weighted", dense=[4], **SMALL), text).eval()
    x = _rows(EXPORT_TEXTS, 10, FEATURES)
    compiled, _ = compile_torchscript(model, x)
    with quiet_torchscript():
        scripted = torch.jit.script(model)
    export_onnx(model, x, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for batch in (x, x[1:3]):
            expected = model(batch)
            assert compiled is not None
            torch.testing.assert_close(compiled(batch), expected, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(scripted(batch), expected, rtol=1e-5, atol=1e-6)
            (got,) = session.run(["output"], {"input": batch.numpy()})
            np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)
