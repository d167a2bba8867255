"""IDX files (the MNIST layout), gzipped or raw, parsed with numpy.

An IDX file is two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per dimension,
then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from tunelab.errors import DataError

__all__ = ["IDX_PARTS", "find_idx_files", "read_idx"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# (split, role) -> file stem; each may also end in .gz.
IDX_PARTS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip detected from its first bytes); return a native-endian array of its shape."""
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file {path}: {error}. Fix: check the file is complete.") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: it should start with two zero bytes, a dtype code and the number of "
            f"dimensions, but starts with {raw[:4].hex(' ') or 'nothing'}. Fix: pass the MNIST-layout "
            "files (train-images-idx3-ubyte[.gz], ...) unmodified."
        )
    code, n_dims = raw[2], raw[3]
    if code not in _DTYPES:
        known = ", ".join(f"0x{key:02X}" for key in _DTYPES)
        raise DataError(f"{path} has IDX dtype code 0x{code:02X}; expected one of {known}.")
    header_size = 4 + 4 * n_dims
    if n_dims == 0 or len(raw) < header_size:
        raise DataError(
            f"{path} has a truncated IDX header ({n_dims} dimensions declared, {len(raw)} bytes)."
        )
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=n_dims, offset=4))
    dtype = _DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise DataError(
            f"{path} declares shape {shape} ({expected} bytes of data) but holds {len(raw) - header_size} "
            "bytes. Fix: the file is truncated or corrupt; download it again."
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=False)


def find_idx_files(directory: Path) -> dict[tuple[str, str], Path]:
    """The IDX files present in ``directory``, keyed like :data:`IDX_PARTS`; the train pair is required."""
    found: dict[tuple[str, str], Path] = {}
    for key, stem in IDX_PARTS.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    missing = [IDX_PARTS[key] for key in (("train", "images"), ("train", "labels")) if key not in found]
    if missing:
        raise DataError(
            f"IDX directory {directory} lacks {', '.join(missing)} (raw or .gz). Expected the MNIST layout: "
            "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], and optionally t10k-* files "
            "for a test part."
        )
    partial = [split for split in ("test",) if ((split, "images") in found) != ((split, "labels") in found)]
    if partial:
        raise DataError(
            f"IDX directory {directory} has only one of the t10k images / labels files; add the other, "
            "or remove both to split a test part off the training files."
        )
    return found
