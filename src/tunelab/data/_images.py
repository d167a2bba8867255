"""Image folders: one sub-folder per class, read with PIL into ``uint8 [N, C, H, W]``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunelab.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "list_image_folder", "read_images"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def list_image_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str], list[str]]:
    """Image paths, their class ids ``[N]``, the class names (sorted folder names) and notices."""
    classes = sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if not classes:
        raise DataError(
            f"image folder {root} has no class sub-folders. Expected one sub-folder per class, e.g. "
            f"{root}/cat/1.png and {root}/dog/2.png."
        )
    paths: list[Path] = []
    labels: list[int] = []
    skipped = 0
    for class_id, name in enumerate(classes):
        files = sorted(
            path for path in (root / name).iterdir() if path.is_file() and not path.name.startswith(".")
        )
        images = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES]
        skipped += len(files) - len(images)
        if not images:
            raise DataError(
                f"class folder {root / name} holds no images (looked for "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}). Fix: add images to it or remove the folder."
            )
        paths += images
        labels += [class_id] * len(images)
    notices = [f"{skipped} file(s) without an image suffix were ignored"] if skipped else []
    return paths, np.asarray(labels, dtype=np.int64), classes, notices


def read_images(
    paths: list[Path], *, image_size: tuple[int, ...] | None, channels: int | None = None
) -> np.ndarray:
    """Read images as ``uint8 [N, C, H, W]``: grayscale (C=1) if every image is, else RGB (C=3), or as
    ``channels`` say (1 or 3: a model's inputs). Without ``image_size`` (height, width) all images must have
    the same size; with it they are resized to it.
    """
    from PIL import Image, UnidentifiedImageError

    modes, sizes = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                modes.append(image.mode)
                sizes.append(image.size)
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"cannot read image {path}: {error}. Fix: remove or replace the file.") from error
    if image_size is None and len(set(sizes)) > 1:
        first, other = sizes[0], next(size for size in sizes if size != sizes[0])
        where = paths[sizes.index(other)]
        raise DataError(
            f"images differ in size: {paths[0]} is {first[1]}x{first[0]} but {where} is "
            f"{other[1]}x{other[0]} (height x width). Fix: set image_size: [height, width] to resize all."
        )
    if channels is None:
        mode = "L" if set(modes) <= _GRAY_MODES else "RGB"
    else:
        mode = "L" if channels == 1 else "RGB"
    height, width = tuple(image_size) if image_size is not None else (sizes[0][1], sizes[0][0])
    out = np.empty((len(paths), 1 if mode == "L" else 3, height, width), dtype=np.uint8)
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                converted = image.convert(mode)
                if converted.size != (width, height):
                    converted = converted.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(converted, dtype=np.uint8)
        except OSError as error:  # a header that opened but pixel data that does not decode
            raise DataError(
                f"cannot decode image {path}: {error}. Fix: remove or replace the file."
            ) from error
        out[index] = pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)
    return out
