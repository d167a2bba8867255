"""`tunelab predict` takes what `tune` takes: a CNN tuned on an image folder predicts a folder of new images
(one row per file, named by its path), one image, an .npz; bad inputs are a message and exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.export import load

runner = CliRunner()


def run_cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, " ".join(result.output.split())


def _png(pixels: np.ndarray, path: Path, *, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    (image.convert("RGB") if rgb else image).save(path)


@pytest.fixture(scope="module")
def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits 0, 1 and 2 as 8x8 uint8 images, and their labels."""
    digits = load_digits()
    keep = digits.target < 3
    return (digits.images[keep] * 255 / 16).astype(np.uint8), digits.target[keep]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, digits_pixels) -> Path:
    """A small CNN tuned on a folder of digit PNGs (one sub-folder per class)."""
    root = tmp_path_factory.mktemp("predict-images")
    pixels, labels = digits_pixels
    for index, (image, label) in enumerate(zip(pixels[:240], labels[:240], strict=True)):
        _png(image, root / "train" / f"digit{label}" / f"{index}.png")
    spec = {
        "name": "digits-images",
        "data": {"source": str(root / "train")},
        "model": {"type": "cnn", "channels": [8], "dense": [16]},
        "train": {"epochs": 4, "batch_size": 32},
        "search": {
            "space": {"train.lr": {"float": [3e-3, 3e-2], "log": True}},
            "n_trials": 2,
            "top_k": 1,
            "n_seeds": 1,
        },
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, output = run_cli("tune", root / "spec.yaml", "--out", root / "run", "-q")
    assert code == 0, output
    return root / "run"


def test_a_folder_of_new_images_gives_one_row_per_file_named_by_its_path(tuned, digits_pixels, tmp_path):
    pixels, _ = digits_pixels
    new = tmp_path / "new_images"
    names = ["a.png", "b.png", "nested/c.png", "nested/deeper/d.png"]
    for name, image in zip(names, pixels[-4:], strict=True):
        _png(image, new / name)
    _png(pixels[-5], new / "rgb.png", rgb=True)  # read as the model's one channel
    (new / "notes.txt").write_text("not an image")
    (new / ".hidden").mkdir()
    _png(pixels[-6], new / ".hidden" / "skipped.png")
    out = tmp_path / "predictions.csv"
    code, output = run_cli("predict", tuned, new, "--out", out)
    assert code == 0, output
    assert "wrote 5 predictions" in output
    frame = pd.read_csv(out)
    assert list(frame["path"]) == sorted([*names, "rgb.png"])
    assert list(frame.columns) == ["path", "prediction", "proba_digit0", "proba_digit1", "proba_digit2"]
    probabilities = frame[["proba_digit0", "proba_digit1", "proba_digit2"]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # The same as the exported model on the same pixels as an array (channels first).
    model = load(tuned)
    by_path = dict(zip(names, pixels[-4:], strict=True)) | {"rgb.png": pixels[-5]}
    arrays = np.stack([by_path[path] for path in frame["path"]])[:, None]
    assert list(frame["prediction"]) == list(model.predict(arrays))
    assert np.allclose(probabilities, model.predict_proba(arrays), atol=1e-6)


def test_one_image_an_npz_and_an_image_of_another_size(tuned, digits_pixels, tmp_path):
    pixels, _ = digits_pixels
    model = load(tuned)
    _png(pixels[-1], tmp_path / "one.png")
    code, output = run_cli("predict", tuned, tmp_path / "one.png", "--out", tmp_path / "one.csv")
    assert code == 0, output
    one = pd.read_csv(tmp_path / "one.csv")
    assert (list(one["path"]), list(one["prediction"])) == (
        ["one.png"],
        list(model.predict(pixels[-1:, None])),
    )
    np.savez(tmp_path / "new.npz", X=pixels[-10:, None])
    code, output = run_cli("predict", tuned, tmp_path / "new.npz", "--out", tmp_path / "npz.csv")
    assert code == 0, output
    assert list(pd.read_csv(tmp_path / "npz.csv")["prediction"]) == list(model.predict(pixels[-10:, None]))
    big = np.kron(pixels[-1], np.ones((4, 4), dtype=np.uint8))  # 32x32: resized to the model's 8x8
    _png(big, tmp_path / "big" / "x.png")
    code, output = run_cli("predict", tuned, tmp_path / "big", "--out", tmp_path / "big.csv")
    assert code == 0, output
    assert len(pd.read_csv(tmp_path / "big.csv")) == 1


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda d: (d / "empty").mkdir() or d / "empty", ["holds no image files", "sub-folders"]),
        (lambda d: d / "missing", ["does not exist", "folder of image files"]),
        (
            lambda d: (d / "rows.csv").write_text("a,b\n1,2\n") and d / "rows.csv",
            ["cannot read", "image files"],
        ),
        (
            lambda d: np.savez(d / "two.npz", a=np.zeros(2), b=np.zeros(2)) or d / "two.npz",
            ["none is named 'X'", "numpy.savez"],
        ),
    ],
)
def test_inputs_an_image_model_cannot_read_are_a_message_and_exit_2(tuned, tmp_path, make, fragments):
    code, output = run_cli("predict", tuned, make(tmp_path), "--out", tmp_path / "p.csv")
    assert code == 2, output
    for fragment in fragments:
        assert fragment in output
    assert not (tmp_path / "p.csv").exists()
