"""Augmentation changes images, keeps shapes (and labels), and each transform does exactly what it says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunelab.errors import SpecError
from tunelab.train import AugmentSpec, Trainer, TrainSpec, augment_images


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(64, 2, 6, 5, generator=torch.Generator().manual_seed(0)) + 0.1  # no exact zeros


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hflip_mirrors_about_half_the_images_exactly(images):
    out = augment_images(images, AugmentSpec(hflip=True), generator=generator())
    assert out.shape == images.shape
    mirrored = [bool(torch.equal(o, i.flip(-1))) for o, i in zip(out, images, strict=True)]
    unchanged = [bool(torch.equal(o, i)) for o, i in zip(out, images, strict=True)]
    assert all(m != u for m, u in zip(mirrored, unchanged, strict=True))  # each is one or the other
    assert 16 < sum(mirrored) < 48


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` moved down by dy and right by dx, zeros shifted in: the reference for the batched shift."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_shift_translates_each_image_with_zero_fill(images):
    out = augment_images(images, AugmentSpec(shift=2), generator=generator())
    assert out.shape == images.shape
    offsets = []
    for o, i in zip(out, images, strict=True):
        matches = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(o, shifted(i, dy, dx))
        ]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 10  # offsets are drawn per image
    assert (0, 0) in offsets or len(offsets) == 64


def test_noise_has_the_asked_std(images):
    out = augment_images(images, AugmentSpec(noise_std=0.3), generator=generator())
    assert (out - images).std().item() == pytest.approx(0.3, rel=0.1)


def test_same_generator_state_same_augmentation(images):
    spec = AugmentSpec(hflip=True, shift=1, noise_std=0.1)
    torch.testing.assert_close(augment_images(images, spec, generator=generator(3)),
                               augment_images(images, spec, generator=generator(3)))  # fmt: skip
    assert not torch.equal(augment_images(images, spec, generator=generator(3)),
                           augment_images(images, spec, generator=generator(4)))  # fmt: skip


class Recorder(nn.Module):
    """A tiny image classifier that remembers the batches it saw in training."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * 6 * 5, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def test_trainer_augments_training_batches_only(images):
    labels = torch.arange(64) % 3
    model = Recorder()
    spec = TrainSpec(epochs=1, batch_size=64, augment=AugmentSpec(hflip=True))
    trainer = Trainer(model, spec, task="classification")
    trainer.fit((images, labels))
    (batch,) = model.seen
    assert batch.shape == images.shape
    # The batch is a permutation of the images, some of them mirrored.
    matches = [next(j for j in range(64) if torch.equal(b, images[j]) or torch.equal(b, images[j].flip(-1)))
               for b in batch]  # fmt: skip
    assert sorted(matches) == list(range(64))
    assert any(not torch.equal(b, images[j]) for b, j in zip(batch, matches, strict=True))


def test_flip_and_shift_need_images():
    spec = TrainSpec(epochs=1, augment=AugmentSpec(shift=1))
    trainer = Trainer(nn.Linear(4, 2), spec, task="classification")
    with pytest.raises(SpecError, match=r"\[N, C, H, W\]"):
        trainer.fit((torch.randn(8, 4), torch.arange(8) % 2))
