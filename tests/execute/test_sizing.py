"""Population sizing under a time budget: expected epochs per scheduler, FLOP counts, members that fit."""

from __future__ import annotations

import pytest

from tunelab.execute import POPULATION_SHARE, PopulationSizer, expected_epochs, forward_flops
from tunelab.models import CNNSpec, MLPSpec
from tunelab.search import AshaScheduler, HyperbandScheduler, MedianStoppingScheduler, NoScheduler


def test_expected_epochs_follow_the_rungs():
    # ASHA rungs 1, 3, 9 below 10 epochs, eta 3: all train 1 epoch, a third 2 more, a ninth 6 more, ...
    asha = AshaScheduler(min_resource=1, max_resource=10, reduction_factor=3)
    assert expected_epochs(asha, 10) == pytest.approx(1 + 2 / 3 + 6 / 9 + 1 / 27)
    # Hyperband: brackets with rungs [1, 3, 9], [3, 9], [9] and sizes 9, 5, 3.
    hyperband = HyperbandScheduler(min_resource=1, max_resource=10, reduction_factor=3)
    assert hyperband.sizes == [9, 5, 3]
    means = [1 + 2 / 3 + 6 / 9 + 1 / 27, 3 + 6 / 3 + 1 / 9, 9 + 1 / 3]
    assert expected_epochs(hyperband, 10) == pytest.approx((9 * means[0] + 5 * means[1] + 3 * means[2]) / 17)
    assert expected_epochs(NoScheduler(), 10) == 10.0
    assert expected_epochs(MedianStoppingScheduler(), 7) == 7.0  # no rungs to count on: the safe side


def test_forward_flops_of_an_mlp_are_its_matmuls_and_other_models_are_counted():
    mlp = MLPSpec(type="mlp", hidden=[256, 128])
    expected = 2 * (784 * 256 + 256 * 128 + 128 * 10)
    assert forward_flops(mlp, input_shape=(1, 28, 28), output_dim=10) == expected
    with_bn = MLPSpec(type="mlp", hidden=[32], batch_norm=True)
    assert forward_flops(with_bn, input_shape=(20,), output_dim=3) == 2 * (20 * 32 + 32 * 3)
    cnn = CNNSpec(type="cnn", channels=[4], kernel_size=3, dense=[16])
    flops = forward_flops(cnn, input_shape=(1, 8, 8), output_dim=2)
    # At least the convolution's multiply-adds over every output pixel (3x3 kernel, 1 -> 4 channels, 8x8 or
    # smaller output) plus the head; counted by torch's FLOP counter.
    assert flops >= 2 * 9 * 4 * 6 * 6 + 2 * 16 * 2


def test_sizer_fits_members_in_a_share_of_the_time_left():
    sizer = PopulationSizer(rows=1000, flop_rate=1e9)
    per_member = 3 * 1e5 * 1000 * 2.0  # FLOPs per member: 3 x forward x rows x epochs = 6e8
    fits = int(POPULATION_SHARE * 100.0 * 1e9 // per_member)  # 41 in a quarter of 100 s
    assert sizer.size(1e5, epochs=2.0, cap=64, time_left=100.0) == fits
    assert sizer.size(1e5, epochs=2.0, cap=8, time_left=100.0) == 8  # never above the cap
    assert sizer.size(1e8, epochs=2.0, cap=8, time_left=100.0) == 1  # an expensive structure alone
    assert sizer.size(1e5, epochs=2.0, cap=8, time_left=-5.0) == 1  # past the deadline: still one
    # A measured population replaces the assumed rate: half as fast, half as many members.
    sizer.observe(1e5, member_epochs=10, seconds=2 * 3 * 1e5 * 1000 * 10 / 1e9)
    assert sizer.rate == pytest.approx(0.5e9)
    assert sizer.size(1e5, epochs=2.0, cap=64, time_left=100.0) == fits // 2
    unknown = PopulationSizer(rows=1000)
    assert unknown.size(1e8, epochs=2.0, cap=8, time_left=1.0) == 8  # no rate yet: the configured size


def test_a_population_dominated_by_overhead_takes_members_its_overhead_covers():
    """A linear model: its population's time is mostly fixed cost, which a population of one measures; the
    next population of that structure then takes as many members as that cost covers, not one."""
    sizer = PopulationSizer(rows=400, flop_rate=1e8)
    flops = 120.0  # a linear model on 30 features, 2 classes
    member_epoch = 3 * flops * 400 / 1e8  # its compute per epoch at the assumed rate: 1.44 ms
    # One member, 200 epochs, 0.1 s an epoch: overhead of about 0.1 s an epoch, 69 members' compute.
    sizer.observe(flops, member_epochs=200, seconds=20.0, population_epochs=200)
    assert sizer.size(flops, epochs=200.0, cap=8, time_left=20.0) == 8
    assert sizer.size(flops, epochs=200.0, cap=256, time_left=20.0) == int(
        (0.1 - member_epoch) / member_epoch
    )
    # A structure whose time is all compute gains nothing from it.
    heavy = 1e6
    sizer.observe(heavy, member_epochs=10, seconds=10 * 3 * heavy * 400 / 1e8, population_epochs=10)
    assert sizer.size(heavy, epochs=10.0, cap=8, time_left=10.0) == 1
