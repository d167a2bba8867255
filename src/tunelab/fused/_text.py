"""Population layers of the text family (``tunelab.models.TextModel``, bag encoder).

K members read the same token ids (the shared batch) from their own embedding tables: ``PopEmbedding`` holds
the K tables as one ``[K, rows, D]`` parameter and addresses member k's row ``i`` as row ``k * rows + i`` of
its ``[K * rows, D]`` view, so one gather (or one ``embedding_bag``) serves every member. ``PopTextBag`` is
the bag encoder of ``TextModel.forward`` for K members at once: the ids, their clamping to ``UNKNOWN_ID``, the
mask of real tokens, the optional hashed bigrams (the same hash), masked pooling (``_masked_pool``'s
semantics: mean / max / mean_max over the real tokens, or the mean weighted by each member's learned token
weights, ``[K, rows]``; zeros for an empty text) and the table features
appended to every member's pooled vector. The head after it is built from the population layers of
``_layers`` (``Population.from_modules``).

The pooling reads the embeddings through ``embedding_bag`` rather than gathering ``[K, N, L, D]`` and reducing
it (half the time, forward and backward, at K = 8 on a 2-core CPU): the mean as a sum weighted by the mask
(padding positions weigh 0, so their rows get a zero gradient), the max with the padding positions pointed at
an excluded row (unigrams) or at a real position of the same text (bigrams, whose table has no padding row).
Mean and max together share one gradient buffer (``_SumMaxBag``).

The head's dropout is ``PopDropout``, which drops at the exact rate ``p``; the model's ``ByteDropout`` rounds
``p`` to a multiple of 1/256 (0.3 -> 0.3008). Eval mode is the same function.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tunelab.errors import SpecError
from tunelab.fused._layers import PopLayer, _expect
from tunelab.models import TextModel

__all__ = ["PopEmbedding", "PopTextBag", "is_text_model", "text_reason"]


def is_text_model(module: nn.Module) -> TypeGuard[TextModel]:
    """Whether ``module`` is a ``TextModel`` (any encoder)."""
    return isinstance(module, TextModel)


def text_reason(module: TextModel) -> str | None:
    """Why population layers cannot represent the text model ``module``, or None when they can (the head's
    layers are checked by the caller)."""
    if module.encoder != "bag":
        return (
            f"it is a text model with the {module.encoder!r} encoder; population layers exist only for the "
            "'bag' encoder (embeddings pooled, then the dense head)"
        )
    tables = [module.embedding] + ([module.ngram_embedding] if module.ngram_embedding is not None else [])
    for name, table in zip(("embedding", "ngram_embedding"), tables, strict=False):
        if table.max_norm is not None or table.scale_grad_by_freq or table.sparse:
            return f"its {name} uses max_norm, scale_grad_by_freq or sparse gradients"
    # The bag encoder leaves the cnn encoder's convs empty and builds neither activation nor rnn.
    extra = sorted(
        name
        for name, child in module.named_children()
        if name not in ("embedding", "ngram_embedding", "head")
        and not (isinstance(child, nn.ModuleList) and len(child) == 0)
    )
    if extra:
        return f"its submodules {extra} are not part of the bag encoder's embedding -> pooling -> head"
    return None


class PopEmbedding(PopLayer):
    """K embedding tables as one: weight ``[K, rows, D]``; shared ids ``[N, ...]`` -> ``[K, N, ..., D]``.

    Member k reads row ``ids`` of its own table. ``padding_idx`` as ``nn.Embedding``'s: positions holding it
    read the member's padding row and pass no gradient to it. :meth:`pool` pools the rows of each bag (the
    last dimension of the ids) with one ``embedding_bag`` call for all members.
    """

    accepts = ("shared",)

    def __init__(self, n_members: int, template: nn.Embedding) -> None:
        super().__init__(layout_in="shared")
        self.layout_out = "stacked"
        self.rows = template.num_embeddings
        self.padding_idx = template.padding_idx
        weight = template.weight
        self.weight = nn.Parameter(
            torch.zeros(
                n_members, self.rows, template.embedding_dim, dtype=weight.dtype, device=weight.device
            ),
            requires_grad=weight.requires_grad,
        )

    def flat_ids(self, ids: Tensor) -> Tensor:
        """Shared ids ``[N, ...]`` (in ``[0, rows)``) -> each member's rows of the ``[K * rows, D]`` view:
        ``[K, N, ...]``."""
        K = self.weight.shape[0]
        offsets = torch.arange(K, device=ids.device) * self.rows
        return ids.unsqueeze(0) + offsets.view(K, *([1] * ids.dim()))

    def forward(self, ids: Tensor) -> Tensor:
        K, rows, D = self.weight.shape
        out = F.embedding(self.flat_ids(ids), self.weight.reshape(K * rows, D))
        if self.padding_idx is None:
            return out
        # The padding positions keep their values but pass no gradient (nn.Embedding's padding_idx).
        return torch.where((ids == self.padding_idx).unsqueeze(-1), out.detach(), out)

    def pool(
        self,
        sum_rows: Tensor | None = None,
        sum_weights: Tensor | None = None,
        max_rows: Tensor | None = None,
        padding_idx: int | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Bags over the ``[K * rows, D]`` view, one per member and text: the sum of ``sum_rows`` (``[K, N,
        L]``, from :meth:`flat_ids`) weighed by ``sum_weights`` (``[N, L]`` shared, or ``[K, N, L]`` per
        member), and the max of
        ``max_rows`` leaving out row ``padding_idx`` (zeros for a bag of it only); ``[K, N, D]`` each (None
        when not asked). Both at once write a single gradient: two ``embedding_bag`` calls would each
        build a full-size one, then add them (one buffer made fused K = 8 steps about twice as fast on a
        2-core CPU)."""
        K, rows, D = self.weight.shape
        table = self.weight.reshape(K * rows, D)
        weights = None
        if sum_rows is not None:
            N, L = sum_rows.shape[1], sum_rows.shape[2]
            if sum_weights is None:
                sum_weights = torch.ones(N, L, dtype=table.dtype, device=table.device)
            weights = sum_weights.to(table.dtype).expand(K, N, L).reshape(K * N, L)
        if sum_rows is not None and weights is not None and max_rows is not None:
            total, highest = _SumMaxBag.apply(
                table, sum_rows.flatten(0, 1), weights, max_rows.flatten(0, 1), padding_idx
            )
            return total.view(K, -1, D), highest.view(K, -1, D)
        total = highest = None
        if sum_rows is not None:
            total = F.embedding_bag(sum_rows.flatten(0, 1), table, mode="sum", per_sample_weights=weights)
            total = total.view(K, -1, D)
        if max_rows is not None:
            highest = F.embedding_bag(max_rows.flatten(0, 1), table, mode="max", padding_idx=padding_idx)
            highest = highest.view(K, -1, D)
        return total, highest

    def load_member(self, k: int, module: nn.Module) -> None:
        module = _expect(module, nn.Embedding)
        with torch.no_grad():
            self.weight[k].copy_(module.weight)

    def export_member(self, k: int, module: nn.Module) -> None:
        module = _expect(module, nn.Embedding)
        with torch.no_grad():
            module.weight.copy_(self.weight[k])


class PopTextBag(PopLayer):
    """``TextModel``'s bag encoder for K members: shared ``[N, length + features]`` -> stacked ``[K, N, P +
    features]``, ``P`` = D (``2D`` for ``mean_max``).

    ``embedding`` (and ``ngram_embedding`` with bigrams) are :class:`PopEmbedding`; ``load_member`` /
    ``export_member`` take the whole ``TextModel`` (its head is the population's next layers).
    """

    accepts = ("shared",)

    def __init__(self, n_members: int, template: TextModel) -> None:
        super().__init__(layout_in="shared")
        self.layout_out = "stacked"
        self.length = template.length
        self.read = template.read  # the ids read: the first ``max_length`` of ``length``
        self.features = template.features
        self.rows = template.rows
        self.pooling = template.pooling
        self.pad_id = template.pad_id
        self.unknown_id = template.unknown_id
        self.buckets = template.buckets
        self.embedding = PopEmbedding(n_members, template.embedding)
        # pooling "weighted": each member's log token weights (TextModel.token_log_weight)
        self.token_log_weight: nn.Parameter | None = None
        if template.token_log_weight is not None:
            self.token_log_weight = nn.Parameter(
                template.token_log_weight.detach().unsqueeze(0).repeat(n_members, 1),
                requires_grad=template.token_log_weight.requires_grad,
            )
        self.ngram_embedding = (
            None if template.ngram_embedding is None else PopEmbedding(n_members, template.ngram_embedding)
        )

    def forward(self, x: Tensor) -> Tensor:
        ids = x[:, : self.read].long()
        ids = ids.masked_fill((ids < 0) | (ids >= self.rows), self.unknown_id)
        mask = ids != self.pad_id  # [N, L]
        words = self.embedding.flat_ids(ids)  # [K, N, L]
        pairs: Tensor | None = None
        both: Tensor | None = None
        if self.ngram_embedding is not None and self.read > 1:
            # TextModel's hash: pair (a, b) -> (a * 1000003 + b) mod buckets
            pairs = self.ngram_embedding.flat_ids((ids[:, :-1] * 1000003 + ids[:, 1:]) % self.buckets)
            both = mask[:, :-1] & mask[:, 1:]
        if self.token_log_weight is not None:  # weighted: a weighted sum over the real tokens / total weight
            weights = self.token_log_weight[:, ids].exp() * mask.to(self.token_log_weight.dtype)  # [K, N, L]
            weighted, _ = self.embedding.pool(words, weights)
            if weighted is None:
                raise RuntimeError("PopEmbedding.pool returned no sum")
            pooled = weighted / weights.sum(dim=2, keepdim=True).clamp(min=1e-6).to(weighted.dtype)
            return self._with_features(pooled, x)
        mean = self.pooling in ("mean", "mean_max")
        top = self.pooling in ("max", "mean_max")
        # Max: padding positions point at member 0's padding row, which the bag leaves out (a real token is
        # never the padding id, so no member reads that row otherwise); a text of padding only gives zeros.
        total, highest = self.embedding.pool(
            words if mean else None,
            mask,
            torch.where(mask, words, self.pad_id) if top else None,
            padding_idx=self.pad_id,
        )
        count = mask.sum(dim=1)
        if self.ngram_embedding is not None and pairs is not None and both is not None:
            # The bigram table has no padding row: for the max, a position that is not a real bigram repeats
            # the text's first real bigram (a repeated row changes no max); a text without one keeps the
            # words' max.
            filled = None
            if top:
                first = both.to(torch.uint8).argmax(dim=1).view(1, -1, 1).expand(pairs.shape[0], -1, 1)
                filled = torch.where(both, pairs, pairs.gather(2, first))
            pair_total, pair_highest = self.ngram_embedding.pool(pairs if mean else None, both, filled)
            if total is not None and pair_total is not None:
                total = total + pair_total
                count = count + both.sum(dim=1)
            if highest is not None and pair_highest is not None:
                any_pair = both.any(dim=1).view(1, -1, 1)
                highest = torch.where(any_pair, torch.maximum(highest, pair_highest), highest)
        parts: list[Tensor] = []
        if total is not None:  # the mean over the real tokens (and bigrams): padding weighs 0
            parts.append(total / count.clamp(min=1).to(total.dtype).view(1, -1, 1))
        if highest is not None:
            parts.append(highest)
        return self._with_features(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1), x)

    def _with_features(self, pooled: Tensor, x: Tensor) -> Tensor:
        """``pooled`` ``[K, N, P]`` with the shared table features of ``x`` appended to every member's."""
        if self.features == 0:
            return pooled
        K, N = pooled.shape[0], pooled.shape[1]
        table = x[:, self.length :].to(pooled.dtype)
        return torch.cat([pooled, table.unsqueeze(0).expand(K, N, self.features)], dim=-1)

    def load_member(self, k: int, module: nn.Module) -> None:
        model = _expect(module, TextModel)
        if model.embedding.weight.requires_grad != self.embedding.weight.requires_grad:
            raise SpecError(
                "members of one text population must all freeze their embedding table or none of them "
                f"(freeze_embedding); member {k} differs. Pack frozen and trained embeddings separately."
            )
        self.embedding.load_member(k, model.embedding)
        if self.token_log_weight is not None:
            with torch.no_grad():
                self.token_log_weight[k].copy_(_token_log_weight(model))
        if self.ngram_embedding is not None:
            self.ngram_embedding.load_member(k, _ngram_table(model))

    def export_member(self, k: int, module: nn.Module) -> None:
        model = _expect(module, TextModel)
        self.embedding.export_member(k, model.embedding)
        if self.token_log_weight is not None:
            with torch.no_grad():
                _token_log_weight(model).copy_(self.token_log_weight[k])
        if self.ngram_embedding is not None:
            self.ngram_embedding.export_member(k, _ngram_table(model))

    def extra_repr(self) -> str:
        settings: dict[str, Any] = {
            "length": self.length,
            "features": self.features,
            "pooling": self.pooling,
            "bigrams": self.ngram_embedding is not None,
        }
        return ", ".join(f"{name}={value}" for name, value in settings.items())


class _SumMaxBag(torch.autograd.Function):
    """``embedding_bag`` sum (weighted) and max over one table, with one gradient buffer for both.

    ``forward(table [R, D], sum_rows [B, L], weights [B, L], max_rows [B, L], padding_idx)`` -> ``(sum [B,
    D], max [B, D])``. Backward: zeros ``[R, D]``; each position adds its bag's sum gradient times its
    weight to its row; each bag's max gradient goes to the row that gave the max, dimension by dimension (a
    bag of padding only passes none), as ``embedding_bag``'s own backward does.
    """

    @staticmethod
    def forward(
        ctx: Any, table: Tensor, sum_rows: Tensor, weights: Tensor, max_rows: Tensor, padding_idx: int | None
    ) -> tuple[Tensor, Tensor]:
        B, L = sum_rows.shape
        offsets = torch.arange(0, B * L, L, device=sum_rows.device)
        total = torch.embedding_bag(
            table, sum_rows.reshape(-1), offsets, False, 0, False, weights.reshape(-1), False, None
        )[0]
        offsets = torch.arange(0, B * max_rows.shape[1], max_rows.shape[1], device=max_rows.device)
        highest, _, sizes, argmax = torch.embedding_bag(
            table, max_rows.reshape(-1), offsets, False, 2, False, None, False, padding_idx
        )
        ctx.save_for_backward(sum_rows, weights, argmax, sizes)
        ctx.n_rows = table.shape[0]
        return total, highest

    @staticmethod
    def backward(ctx: Any, grad_total: Tensor, grad_highest: Tensor) -> tuple[Tensor | None, ...]:
        sum_rows, weights, argmax, sizes = ctx.saved_tensors
        D = grad_total.shape[1]
        grad = grad_total.new_zeros(ctx.n_rows, D)
        grad.index_add_(
            0, sum_rows.reshape(-1), (grad_total.unsqueeze(1) * weights.unsqueeze(2)).flatten(0, 1)
        )
        grad_highest = grad_highest.masked_fill((sizes == 0).unsqueeze(1), 0.0)
        columns = torch.arange(D, device=argmax.device)
        grad.view(-1).index_add_(0, (argmax.clamp(min=0) * D + columns).reshape(-1), grad_highest.reshape(-1))
        return grad, None, None, None, None


def _token_log_weight(model: TextModel) -> nn.Parameter:
    if model.token_log_weight is None:
        raise TypeError("expected a TextModel with pooling 'weighted', got one without token weights")
    return model.token_log_weight


def _ngram_table(model: TextModel) -> nn.Embedding:
    if model.ngram_embedding is None:
        raise TypeError("expected a TextModel with bigrams (ngrams=2), got one without an ngram_embedding")
    return model.ngram_embedding
