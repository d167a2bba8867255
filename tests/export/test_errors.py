"""Bad input, at export and at load and predict time: each a TunelabError that says what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.errors import DataError, SpecError
from tunelab.export import export_model, load
from tunelab.models import build_model

# ---------------------------------------------------------------------- loading


def test_a_path_that_does_not_exist(tmp_path: Path):
    with pytest.raises(DataError, match=r"does not exist"):
        load(tmp_path / "nowhere")


def test_a_file_instead_of_a_directory(tmp_path: Path, image, copy_export):
    with pytest.raises(DataError, match=r"is a file, not a directory.*pass its directory"):
        load(copy_export(image.export_dir) / "model.ts")


def test_an_empty_directory_says_what_an_export_contains(tmp_path: Path):
    with pytest.raises(DataError, match=r"neither a tunelab run nor an export") as caught:
        load(tmp_path)
    for name in ("metadata.json", "model.pt", "model.ts", "preprocessor.json"):
        assert name in str(caught.value)


def test_a_run_directory_without_an_export(tmp_path: Path):
    (tmp_path / "summary.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match=r"is a tunelab run but holds no exported model.*tunelab tune"):
        load(tmp_path)


def test_an_export_one_level_down_is_named(tmp_path: Path, image):
    shutil.copytree(image.export_dir, tmp_path / "final")
    with pytest.raises(DataError, match=r"these subdirectories are:.*final"):
        load(tmp_path)


def test_an_interrupted_export_without_metadata(image, copy_export):
    directory = copy_export(image.export_dir)
    (directory / "metadata.json").unlink()
    with pytest.raises(DataError, match=r"incomplete export.*no metadata.json"):
        load(directory)


@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("model.ts", "auto"),
        ("model.pt", "weights"),
        ("preprocessor.json", "auto"),
        ("preprocessor.npz", "auto"),
    ],
)
def test_a_missing_file_is_named(image, copy_export, name, backend):
    directory = copy_export(image.export_dir)
    (directory / name).unlink()
    with pytest.raises(DataError, match=f"lacks {name}"):
        load(directory, backend=backend)


def test_a_corrupted_torchscript_file_points_at_the_weights(image, copy_export):
    directory = copy_export(image.export_dir)
    (directory / "model.ts").write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"model.ts is damaged.*backend='weights'"):
        load(directory)
    exported = load(directory, backend="weights")  # the other copy of the model still works
    np.testing.assert_allclose(exported.predict_proba(image.raw_test), image.expected, rtol=1e-5, atol=1e-6)


def test_a_corrupted_weights_file(image, copy_export):
    directory = copy_export(image.export_dir)
    data = (directory / "model.pt").read_bytes()
    (directory / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read .*model.pt as saved weights"):
        load(directory, backend="weights")


def test_weights_that_do_not_fit_the_spec(image, copy_export):
    directory = copy_export(image.export_dir)
    state = torch.load(directory / "model.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, directory / "model.pt")
    with pytest.raises(DataError, match=r"do not fit the model its spec describes.*Missing key"):
        load(directory, backend="weights")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read .* as JSON"),
        ('{"format": "something-else"}', "not the metadata of a tunelab export"),
        ('{"format": "tunelab-export", "format_version": 99}', "newer than this tunelab reads"),
        ('{"format": "tunelab-export", "format_version": 1}', "metadata.json is malformed"),
    ],
)
def test_a_bad_metadata_file(image, copy_export, content, message):
    directory = copy_export(image.export_dir)
    (directory / "metadata.json").write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load(directory)


def test_an_unknown_backend(image):
    with pytest.raises(SpecError, match=r"backend must be one of auto, torchscript, weights"):
        load(image.export_dir, backend="tensorrt")  # type: ignore[arg-type]


def test_a_device_that_is_not_one(image):
    with pytest.raises(SpecError, match=r"device 'gpu7' is not a torch device"):
        load(image.export_dir, device="gpu7")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_here(image):
    with pytest.raises(SpecError, match=r"device 'cuda:0' is not available here.*device='cpu'"):
        load(image.export_dir, device="cuda:0")


def test_an_empty_table_gives_no_predictions(table):
    exported = load(table.export_dir)
    assert exported.predict(table.raw_test.iloc[:0]).shape == (0,)
    frame = exported.predict_frame(table.raw_test.iloc[:0])
    assert len(frame) == 0
    assert list(frame.columns) == ["prediction", "proba_high", "proba_low", "proba_mid"]


# ---------------------------------------------------------------------- predicting


def test_a_missing_feature_column_is_named(table):
    exported = load(table.export_dir)
    with pytest.raises(
        DataError, match=r"lacks column\(s\) 'color'.*Expected columns: 'age', 'income', 'color'"
    ):
        exported.predict(table.raw_test.drop(columns=["color"]))


def test_a_series_without_its_target_column(sequence):
    # The series' own past values are an input of every window.
    with pytest.raises(DataError, match=r"lacks column\(s\) 'y'"):
        load(sequence.export_dir).predict(sequence.raw.drop(columns=["y"]))


def test_a_series_shorter_than_a_window(sequence):
    with pytest.raises(DataError, match=r"a window needs 8"):
        load(sequence.export_dir).predict(sequence.raw.iloc[:5])


@pytest.mark.parametrize("shape", [(4, 2, 8, 8), (4, 8, 7), (64,)])
def test_images_of_the_wrong_shape(image, shape):
    with pytest.raises(DataError, match=r"do not match the training images"):
        load(image.export_dir).predict(np.zeros(shape))


def test_a_table_as_an_array_with_the_wrong_number_of_columns(table):
    with pytest.raises(DataError, match=r"one column per input column \(3: 'age', 'income', 'color'\)"):
        load(table.export_dir).predict(np.zeros((4, 5)))


def test_a_frame_for_an_image_model(image, table):
    with pytest.raises(DataError, match=r"takes an array, not a DataFrame"):
        load(image.export_dir).predict(table.raw_test)


def test_wrong_shape_without_preprocessor(tmp_path: Path, image):
    directory = export_model(
        tmp_path / "bare",
        model=image.model,
        preprocessor=None,
        model_spec=image.spec,
        task="classification",
        input_shape=(1, 8, 8),
        output_dim=10,
    )
    with pytest.raises(DataError, match=r"inputs of shape \[3, 64\], but the model takes \[N, 1, 8, 8\]"):
        load(directory).predict(np.zeros((3, 64)))


def test_predict_proba_on_a_forecaster(sequence):
    with pytest.raises(SpecError, match=r"predict_proba is for classification.*Use predict"):
        load(sequence.export_dir).predict_proba(sequence.raw)


def test_a_bad_batch_size(image):
    with pytest.raises(SpecError, match=r"batch_size must be an int >= 1"):
        load(image.export_dir).predict(image.raw_test, batch_size=0)


# ---------------------------------------------------------------------- exporting


def _export(tmp_path: Path, image, **overrides):
    arguments = {
        "model": image.model,
        "preprocessor": image.bundle.preprocessor,
        "model_spec": image.spec,
        "task": "classification",
        "input_shape": (1, 8, 8),
        "output_dim": 10,
    }
    return export_model(tmp_path / "export", **{**arguments, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"output_dim": 3}, "fitted for output_dim 10 \\(given 3\\)"),
        (
            {"preprocessor": None, "output_dim": 3},
            "returns \\[2, 10\\] for the example batch; expected \\[2, 3\\]",
        ),
        ({"task": "regression"}, "fitted for task 'classification' \\(given 'regression'\\)"),
        ({"task": "ranking"}, "task must be one of classification, regression, forecasting"),
        ({"input_shape": (8, 8)}, "fitted for input_shape \\(1, 8, 8\\) \\(given \\(8, 8\\)\\)"),
        ({"input_shape": (0, 8)}, "input_shape must be one sample's shape"),
        ({"model_spec": {"type": "cnn", "channels": [8]}}, "model_spec does not describe the model"),
        ({"model_spec": {"type": "transformer"}}, "model_spec is not a valid model spec"),
        ({"metadata": {"task": "x"}}, "metadata must not set \\['task'\\]"),
        ({"metadata": {"score": np.arange(3)}}, "metadata\\['score'\\] is not a JSON value.*tolist"),
        ({"example_input": torch.zeros(2, 64)}, "example_input must be a tensor \\[N, 1, 8, 8\\]"),
        ({"model": "model.pt"}, "model must be a torch.nn.Module"),
    ],
)
def test_export_argument_errors(tmp_path: Path, image, overrides, message):
    with pytest.raises(SpecError, match=message):
        _export(tmp_path, image, **overrides)
    assert not (tmp_path / "export").exists()


def test_export_to_a_file_path(tmp_path: Path, image):
    (tmp_path / "export").write_text("", encoding="utf-8")
    with pytest.raises(SpecError, match=r"it is a file"):
        _export(tmp_path, image)


def test_a_spec_that_builds_other_outputs_is_refused(tmp_path: Path):
    # Same layer shapes (the weights load), other activation: the spec would rebuild another function.
    model = build_model(
        {"type": "mlp", "hidden": [4], "activation": "tanh"}, input_shape=(3,), output_dim=2, seed=0
    )
    with pytest.raises(SpecError, match=r"computes other outputs"):
        export_model(
            tmp_path / "export",
            model=model,
            preprocessor=None,
            model_spec={"type": "mlp", "hidden": [4], "activation": "relu"},
            task="regression",
            input_shape=(3,),
            output_dim=2,
        )


def test_metadata_json_is_written_last(tmp_path: Path, image, monkeypatch):
    """An export that fails midway leaves no metadata.json, so it is never taken for a complete one."""
    _export(tmp_path, image)
    import tunelab.export._export as module

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "write_state", fail)
    with pytest.raises(OSError, match=r"disk full"):
        _export(tmp_path, image)
    assert not (tmp_path / "export" / "metadata.json").exists()
    with pytest.raises(DataError, match=r"incomplete export"):
        load(tmp_path / "export")
