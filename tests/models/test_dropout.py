"""ByteDropout: nn.Dropout's function (zero with probability p, scale the rest) with a byte-drawn mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunelab.models import ByteDropout, byte_dropout_rate


def test_the_rate_is_p_rounded_to_a_multiple_of_1_256():
    assert byte_dropout_rate(0.3) == 77 / 256
    assert byte_dropout_rate(0.5) == 0.5
    assert byte_dropout_rate(0.25) == 0.25


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8])
def test_elements_are_dropped_at_the_rate_and_survivors_scaled_to_keep_the_mean(p):
    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5  # no zeros of its own
    out = ByteDropout(p).train()(x)
    rate = byte_dropout_rate(p)
    dropped = out == 0
    # Binomial(200,000, rate): six standard deviations at most; the seeded draw makes this repeatable.
    assert abs(float(dropped.float().mean()) - rate) < 6 * (rate * (1 - rate) / len(x)) ** 0.5
    torch.testing.assert_close(out[~dropped], x[~dropped] / (1 - rate))


def test_gradients_are_the_mask_applied_to_the_incoming_gradient():
    torch.manual_seed(1)
    x = (torch.rand(64, 8, 5, 5) + 0.5).requires_grad_()
    weights = torch.randn(64, 8, 5, 5)
    out = ByteDropout(0.4).train()(x)
    (out * weights).sum().backward()
    # out = x * m elementwise, so d(sum(out * w))/dx = w * m, with m = out / x
    torch.testing.assert_close(x.grad, weights * (out / x).detach())


def test_the_draws_follow_torch_s_seed_and_differ_between_calls():
    x = torch.rand(10_000)
    dropout = ByteDropout(0.5)
    torch.manual_seed(7)
    first, second = dropout(x), dropout(x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x), first)
    assert not torch.equal(first, second)


def test_channels_last_input_keeps_its_layout():
    torch.manual_seed(0)
    x = torch.rand(4, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    out = ByteDropout(0.5).train()(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] * 2)


def test_a_strided_input_is_handled():
    torch.manual_seed(0)
    x = torch.rand(8, 10)[:, ::2]  # neither contiguous nor channels-last
    out = ByteDropout(0.5).train()(x)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] * 2)


@pytest.mark.parametrize(
    ("p", "inplace"),
    [(0.0005, False), (0.9995, False), (0.5, True)],  # rates that round to 0 or 1; in place
)
def test_what_bytes_cannot_draw_takes_nn_dropout_s_own_path(p, inplace):
    x = torch.rand(50_000) + 0.5
    torch.manual_seed(3)
    expected = nn.Dropout(p, inplace=inplace).train()(x.clone())
    torch.manual_seed(3)
    assert torch.equal(ByteDropout(p, inplace=inplace).train()(x.clone()), expected)


def test_eval_mode_is_the_identity_and_it_is_an_nn_dropout():
    dropout = ByteDropout(0.5)
    assert isinstance(dropout, nn.Dropout)
    x = torch.rand(3, 4)
    assert dropout.eval()(x) is x or torch.equal(dropout(x), x)
