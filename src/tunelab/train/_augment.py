"""Random image augmentation of a whole batch at once (no per-sample Python), from an explicit generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.train._spec import AugmentSpec

__all__ = ["augment_images"]


def augment_images(images: torch.Tensor, spec: AugmentSpec, *, generator: torch.Generator) -> torch.Tensor:
    """A randomly flipped, shifted and/or noised copy of ``images`` ``[N, C, H, W]`` (labels are untouched).

    Each image is mirrored left-right with probability 1/2 (``hflip``), translated by a uniform integer
    offset in ``[-shift, shift]`` along each axis with zeros shifted in, then given gaussian noise of std
    ``noise_std``.
    All draws come from ``generator`` (on the images' device).
    """
    n, device = images.shape[0], images.device
    out = images
    if spec.hflip:
        flip = torch.rand(n, generator=generator, device=device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    if spec.shift:
        offsets = torch.randint(-spec.shift, spec.shift + 1, (2, n), generator=generator, device=device)
        out = _shift(out, offsets[0], offsets[1], spec.shift)
    if spec.noise_std:
        noise = torch.randn(out.shape, generator=generator, device=device, dtype=out.dtype)
        out = out + spec.noise_std * noise
    return out


def _shift(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """``out[i, :, r, c] = images[i, :, r - dy[i], c - dx[i]]``, zero where that falls outside the image."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    # Row r of image i reads padded row r + pad - dy[i]: gather rows, then columns, for all images at once.
    rows = torch.arange(h, device=images.device)[None, :] + (pad - dy)[:, None]  # [N, H]
    cols = torch.arange(w, device=images.device)[None, :] + (pad - dx)[:, None]  # [N, W]
    padded = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return padded.gather(3, cols[:, None, None, :].expand(n, c, h, w))
