"""The text family: ``TextModel``, token embeddings, an encoder pooled over the real tokens, a dense head.

A text sample is one float32 row ``[length + features]`` (``tunelab.inputs.TextInput``): token ids, right
padded with ``PAD_ID``, then standardized table features. Every step is plain tensor code (no packed
sequences, no data-dependent Python), so the model traces to TorchScript and exports to ONNX.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.inputs import PAD_ID, UNKNOWN_ID, TextInput
from tunelab.models._dropout import ByteDropout
from tunelab.models._layers import ACTIVATION_MODULES, block
from tunelab.models._specs import TextSpec

__all__ = ["TextModel", "TextSpec", "build_text"]

_RNN_CELLS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}


class TextModel(nn.Module):
    """``[N, length + features]`` -> ``[N, output_dim]``; see ``TextSpec`` for the encoders.

    ``forward``: ids ``x[:, :length].long()`` (ids outside ``[0, rows)`` read as ``UNKNOWN_ID``), mask
    ``ids != PAD_ID``, ``embedding`` ``[N, L, D]``, then by ``encoder``:

    - bag: masked ``pooling`` of the embeddings, ``[N, D]`` (``2D`` for ``mean_max``); ``weighted``: the
      mean weighted by ``token_log_weight.exp()`` of each token;
    - cnn: each of ``convs`` (``FrontPaddedConv1d(D, channels, k)``: the embeddings with ``k - 1`` zeros in
      front; output ``t`` reads the window of tokens ``t - k + 1 .. t``) and ``activation``, then the max over
      the windows that end on a real token, ``[N, channels * len(kernel_sizes)]``. A text shorter than ``k``
      has windows too; trailing padding never enters a window that counts;
    - lstm / gru: ``rnn`` (batch first), its outputs pooled over the real tokens, ``[N, H * directions]``
      (``x2`` for ``mean_max``). No packed sequences (they do not export): the forward direction never sees
      the trailing padding, but a backward direction reads the padding first, so with ``bidirectional`` the
      output depends a little on how much padding follows the text.

    The table features ``x[:, length:]`` are concatenated to the pooled vector, then ``head`` (``Sequential``:
    ``ByteDropout`` when ``dropout > 0``, the dense blocks, a final ``Linear``). An empty text (all padding)
    pools to zeros. ``pretrained_hits`` counts the embedding rows set from a word-vector file.
    """

    def __init__(self, spec: TextSpec, *, text: TextInput, output_dim: int) -> None:
        super().__init__()
        self.length = text.length  # ids per sample in the input
        self.read = text.length if spec.max_length is None else min(spec.max_length, text.length)  # ids read
        self.features = text.features
        self.rows = text.vocab_size if spec.vocab_size is None else min(spec.vocab_size, text.vocab_size)
        self.encoder = spec.encoder
        self.pooling = "max" if spec.encoder == "cnn" else spec.pooling
        self.pretrained_hits = 0
        # Attributes rather than globals, which TorchScript cannot read.
        self.pad_id = PAD_ID
        self.unknown_id = UNKNOWN_ID
        self.embedding = nn.Embedding(self.rows, spec.embedding_dim, padding_idx=PAD_ID)
        # pooling "weighted": the log of each id's weight, starting at its inverse document frequency.
        self.token_log_weight: nn.Parameter | None = None
        if self.pooling == "weighted":
            idf = torch.tensor(text.inverse_document_frequency()[: self.rows], dtype=torch.float32)
            self.token_log_weight = nn.Parameter(idf.log())
        # Bigrams (bag only): each adjacent pair of real tokens hashed into `buckets` rows of its own table.
        self.bigrams = spec.encoder == "bag" and spec.ngrams == 2
        self.buckets = spec.buckets
        self.ngram_embedding: nn.Embedding | None = (
            nn.Embedding(spec.buckets, spec.embedding_dim) if self.bigrams else None
        )
        self.convs = nn.ModuleList()
        self.activation: nn.Module | None = None
        self.rnn: nn.LSTM | nn.GRU | None = None
        if spec.encoder == "cnn":
            for k in spec.kernel_sizes:
                self.convs.append(FrontPaddedConv1d(spec.embedding_dim, spec.channels, k))
            self.activation = ACTIVATION_MODULES[spec.activation]()
            width = spec.channels * len(spec.kernel_sizes)
        elif spec.encoder in _RNN_CELLS:
            self.rnn = _RNN_CELLS[spec.encoder](
                input_size=spec.embedding_dim,
                hidden_size=spec.hidden_size,
                num_layers=spec.n_layers,
                bidirectional=spec.bidirectional,
                batch_first=True,
            )
            width = spec.hidden_size * (2 if spec.bidirectional else 1)
        else:
            width = spec.embedding_dim
        if self.pooling == "mean_max":
            width *= 2
        width += self.features
        layers: list[nn.Module] = [ByteDropout(spec.dropout)] if spec.dropout > 0 else []
        for hidden in spec.dense:
            layers += block(
                nn.Linear(width, hidden), activation=spec.activation, batch_norm=False, dropout=spec.dropout
            )
            width = hidden
        layers.append(nn.Linear(width, output_dim))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, : self.read].long()
        ids = ids.masked_fill((ids < 0) | (ids >= self.rows), self.unknown_id)
        if not torch.jit.is_scripting():  # noqa: SIM102 (TorchScript skips this block only when it stands alone)
            if self._bag_kernel():
                pooled = self._embedding_bag(ids)
                if self.features > 0:
                    pooled = torch.cat([pooled, x[:, self.length :]], dim=1)
                return self.head(pooled)
        mask = ids != self.pad_id  # [N, L]
        embedded = self.embedding(ids)  # [N, L, D]
        if self.encoder == "cnn":
            sequence = embedded.transpose(1, 2)  # [N, D, L]
            keep = mask.unsqueeze(1)  # [N, 1, L]
            any_token = mask.any(dim=1, keepdim=True)  # [N, 1]
            pooled_parts = []
            for conv in self.convs:
                windows = conv(sequence)  # [N, C, L]
                if self.activation is not None:
                    windows = self.activation(windows)
                highest = windows.masked_fill(~keep, float("-inf")).amax(dim=2)  # [N, C]
                pooled_parts.append(torch.where(any_token, highest, torch.zeros_like(highest)))
            pooled = torch.cat(pooled_parts, dim=1)
        elif self.rnn is not None:
            if not torch.jit.is_scripting() and torch.jit.is_tracing():
                outputs = self._traced_rnn(embedded)
            else:
                outputs, _ = self.rnn(embedded)  # [N, L, H * directions]
            pooled = _masked_pool(outputs, mask, self.pooling, self._token_weights(ids, mask))
        elif self.ngram_embedding is not None:
            # pair (a, b) -> (a * 1000003 + b) mod buckets: a fixed hash, exact in int64 for any vocabulary
            pairs = (ids[:, :-1] * 1000003 + ids[:, 1:]) % self.buckets
            both = mask[:, :-1] & mask[:, 1:]
            values = torch.cat([embedded, self.ngram_embedding(pairs)], dim=1)
            pooled = _masked_pool(values, torch.cat([mask, both], dim=1), self.pooling)
        else:
            pooled = _masked_pool(embedded, mask, self.pooling, self._token_weights(ids, mask))
        if self.features > 0:
            pooled = torch.cat([pooled, x[:, self.length :]], dim=1)
        return self.head(pooled)

    def _bag_kernel(self) -> bool:
        """Whether this forward pools a bag of unigrams with ``embedding_bag`` (eager runs): the same function
        as the masked pooling below, 2-3x faster on a CPU, forward and backward; traced, scripted and exported
        models take the masked pooling, which every runtime has."""
        if self.encoder != "bag" or self.ngram_embedding is not None:
            return False
        return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())

    def _token_weights(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """``pooling="weighted"``: each position's token weight ``[N, L]``, zero at the padding; else None."""
        log_weight = self.token_log_weight
        if log_weight is None:
            return None
        # Gathered first: N * L exponentials a step, not the whole vocabulary's.
        return log_weight[ids].exp() * mask.to(log_weight.dtype)

    def _embedding_bag(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean / max / both of each row's embeddings, ``padding_idx`` excluded (an empty row pools to zeros):
        ``_masked_pool`` of the embeddings over the real tokens."""
        weight = self.embedding.weight
        weights = self._token_weights(ids, ids != self.pad_id)
        if weights is not None:  # the weighted sum over real tokens (padding weighs 0), then / total weight
            total = torch.nn.functional.embedding_bag(ids, weight, mode="sum", per_sample_weights=weights)
            return total / weights.sum(dim=1, keepdim=True).clamp(min=1e-6).to(total.dtype)
        parts = [
            torch.nn.functional.embedding_bag(ids, weight, mode=mode, padding_idx=self.pad_id)
            for mode in (("mean", "max") if self.pooling == "mean_max" else (self.pooling,))
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _traced_rnn(self, embedded: torch.Tensor) -> torch.Tensor:
        """``rnn(embedded)``'s outputs, without the ``TracerWarning`` its own argument checks emit.

        ``nn.RNNBase.forward`` compares the input's sizes with its settings in Python; tracing warns that it
        froze each comparison. Those checks hold for every batch (the input size is ``embedding_dim``), and
        the zero initial state still takes its batch size from the input, so the trace is exact; silenced,
        the export's tracer (which discards warned traces) accepts it.
        """
        if self.rnn is None:
            raise RuntimeError("_traced_rnn is only for the lstm and gru encoders")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            outputs: torch.Tensor = self.rnn(embedded)[0]
        return outputs


class FrontPaddedConv1d(nn.Conv1d):
    """``nn.Conv1d`` over its input with ``kernel_size - 1`` zeros in front: ``[N, C, L]`` -> ``[N, C', L]``,
    output ``t`` the window of positions ``t - k + 1 .. t``.

    Exactly L outputs, laid out contiguously: the same windows as ``padding=k - 1`` and a slice of the first
    L, whose element-wise work on the strided slice cost 2-10x more (its ReLU backward 5.5 ms against the
    conv's 0.46 ms, profiled on one thread). Its state is ``nn.Conv1d``'s.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        front = input.new_zeros(input.shape[0], input.shape[1], self.kernel_size[0] - 1)
        return self._conv_forward(torch.cat([front, input], dim=2), self.weight, self.bias)


def _masked_pool(
    values: torch.Tensor, mask: torch.Tensor, pooling: str, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``values`` ``[N, L, D]`` pooled over the positions where ``mask`` ``[N, L]`` is true: ``[N, D]``
    (``[N, 2D]`` for ``mean_max``, mean first); zeros for a row without any true position. ``weighted``: the
    mean weighted by ``weights`` ``[N, L]`` (zero at the positions ``mask`` leaves out)."""
    keep = mask.unsqueeze(2)  # [N, L, 1]
    if pooling == "weighted":
        if weights is None:
            raise ValueError("weighted pooling needs the token weights")
        scale = weights.to(values.dtype).unsqueeze(2)  # [N, L, 1]
        total = (values * scale).sum(dim=1)
        # 1e-6: the least total weight divided by (a text of padding only weighs 0 and pools to zeros); a
        # literal, since TorchScript reads no module constant.
        return total / scale.sum(dim=1).clamp(min=1e-6)
    parts: list[torch.Tensor] = []
    if pooling in ("mean", "mean_max"):
        count = keep.sum(dim=1).clamp(min=1).to(values.dtype)  # [N, 1]
        parts.append(values.masked_fill(~keep, 0.0).sum(dim=1) / count)
    if pooling in ("max", "mean_max"):
        # -inf fits every float dtype (a finite "lowest" overflows float16 under autocast); rows without a
        # true position come out -inf and are replaced by zeros, and neither step passes a gradient to them.
        highest = values.masked_fill(~keep, float("-inf")).amax(dim=1)
        parts.append(torch.where(keep.any(dim=1), highest, torch.zeros_like(highest)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def build_text(
    spec: TextSpec, *, input_shape: tuple[int, ...], output_dim: int, text: TextInput | None
) -> TextModel:
    """A ``TextModel`` for samples laid out as ``text`` (``input_shape`` must be ``(text.width,)``), with the
    ``pretrained`` word vectors loaded into its embedding table (frozen with ``freeze_embedding``)."""
    if text is None:
        raise SpecError(
            f"model type 'text' needs a text column in the data, but the data's samples (shape "
            f"{input_shape}) hold no token ids. Name the text column in the data spec so that it is "
            "tokenized, or use type 'mlp' for tables."
        )
    if tuple(input_shape) != (text.width,):
        raise SpecError(
            f"a text model reads samples of shape ({text.width},) (length {text.length} token ids + "
            f"{text.features} table features); the data's samples have shape {tuple(input_shape)}. Build the "
            "model with the input_shape and TextInput of the same prepared data."
        )
    model = TextModel(spec, text=text, output_dim=output_dim)
    if spec.pretrained is not None:
        if not text.vocabulary:
            raise SpecError(
                f"pretrained word vectors ({spec.pretrained!r}) are matched to the data's tokens, but the "
                "data's vocabulary is not at hand (TextInput.vocabulary is empty). Prepare the data with "
                "tunelab.data so that its vocabulary is kept, or leave pretrained out."
            )
        vectors = _read_vectors(Path(spec.pretrained), text.vocabulary[: model.rows], spec.embedding_dim)
        if vectors:
            weight = model.embedding.weight
            with torch.no_grad():
                weight[list(vectors)] = torch.tensor(list(vectors.values()), dtype=weight.dtype)
        model.pretrained_hits = len(vectors)
        if spec.freeze_embedding:
            model.embedding.weight.requires_grad_(False)
    return model


def _read_vectors(path: Path, vocabulary: Sequence[str], dim: int) -> dict[int, list[float]]:
    """The vectors in the text-format file ``path`` of the tokens in ``vocabulary``, by token id (the first
    line of a token listed twice wins; the padding token is never read). ``SpecError`` when the file is
    missing or malformed, or its vectors are not ``dim`` long."""
    wanted = {token: index for index, token in enumerate(vocabulary) if index != PAD_ID}
    found: dict[int, list[float]] = {}
    file_dim: int | None = None
    for number, token, rest in _vector_lines(path):
        index = wanted.get(token)
        # Only the first line and the wanted tokens' lines are split into values: most of a large file is
        # words the data does not have.
        if file_dim is None or (index is not None and index not in found):
            values = rest.split()
            if number == 1 and len(values) == 1 and token.isdigit() and values[0].isdigit():
                file_dim = int(values[0])  # the "count dim" header
                continue
            if file_dim is None:
                file_dim = len(values)
            if len(values) != file_dim:
                raise SpecError(
                    f"line {number} of the word-vector file {str(path)!r} holds {len(values)} values after "
                    f"its token; the file's vectors have {file_dim}. Repair or replace the file "
                    "(one token and its values per line, separated by spaces)."
                )
            if index is not None and index not in found:
                found[index] = _floats(values, path, number)
        if file_dim != dim:
            raise SpecError(
                f"the word vectors in {str(path)!r} have {file_dim} dimensions, but embedding_dim is {dim}. "
                f"Set embedding_dim: {file_dim} to use this file, or give a file of "
                f"{dim}-dimensional vectors."
            )
    return found


def _vector_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """``(line number, first field, the rest of the line)`` of each non-blank line, read lazily."""
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                parts = line.split(maxsplit=1)
                if parts:
                    yield number, parts[0], parts[1] if len(parts) == 2 else ""
    except FileNotFoundError as error:
        raise SpecError(
            f"the pretrained word-vector file {str(path)!r} does not exist. Check the path (relative paths "
            "start at the working directory), or leave pretrained out."
        ) from error
    except UnicodeDecodeError as error:
        raise SpecError(
            f"the pretrained word-vector file {str(path)!r} is not UTF-8 text ({error}). Give a text-format "
            "file (token and values per line; a binary word2vec file must be converted first)."
        ) from error


def _floats(values: list[str], path: Path, number: int) -> list[float]:
    try:
        floats = [float(value) for value in values]
    except ValueError as error:
        raise SpecError(
            f"line {number} of the word-vector file {str(path)!r} has a value that is not a number "
            f"({error}). Repair or replace the file."
        ) from error
    if not all(math.isfinite(value) for value in floats):
        raise SpecError(
            f"line {number} of the word-vector file {str(path)!r} has a value that is not finite "
            "(nan or inf). Repair or replace the file."
        )
    return floats
