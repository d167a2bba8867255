"""An exported model predicts what the in-process model predicts, via TorchScript and via the weights."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from tunelab.export import ExportedModel, export_model, find_export, load
from tunelab.models import build_model

KINDS = ["table", "image", "sequence"]
BACKENDS = ["torchscript", "weights"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("trained", KINDS, indirect=True)
def test_predictions_equal_the_in_process_model(trained, backend):
    exported = load(trained.export_dir, backend=backend)
    assert exported.backend == backend
    preprocessor = trained.bundle.preprocessor
    if trained.bundle.task == "classification":
        probabilities = trained.on_test(exported.predict_proba)
        np.testing.assert_allclose(probabilities, trained.expected, rtol=1e-5, atol=1e-6)
        labels = trained.on_test(exported.predict)
        np.testing.assert_array_equal(labels, preprocessor.inverse_target(trained.expected))
    else:
        values = trained.on_test(exported.predict)
        assert values.shape == trained.expected.shape  # [N, horizon] in the series' units
        np.testing.assert_allclose(values, trained.expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("trained", KINDS, indirect=True)
def test_both_backends_agree_on_the_raw_outputs(trained):
    scripted, rebuilt = (load(trained.export_dir, backend=backend) for backend in BACKENDS)
    assert isinstance(scripted.module, torch.jit.ScriptModule)
    assert not isinstance(rebuilt.module, torch.jit.ScriptModule)
    x = trained.bundle.X_test
    with torch.no_grad():
        torch.testing.assert_close(scripted.module(x), rebuilt.module(x))
        torch.testing.assert_close(rebuilt.module(x), trained.model.eval()(x))


def test_table_labels_are_the_users_values_with_or_without_the_target_column(table):
    exported = load(table.export_dir)
    with_target = exported.predict(table.raw_test)
    without_target = exported.predict(table.raw_test.drop(columns=["label"]))
    np.testing.assert_array_equal(with_target, without_target)
    assert set(with_target) <= {"high", "mid", "low"}
    assert list(exported.classes) == ["high", "low", "mid"]  # sorted labels, class-id order
    # A model this small on this little data still beats chance on its own test rows.
    assert (with_target == table.raw_test["label"].to_numpy()).mean() > 0.5


def test_table_row_with_every_value_missing_is_imputed(table):
    exported = load(table.export_dir)
    empty = pd.DataFrame({"age": [np.nan], "income": [np.nan], "color": [None]})
    assert exported.predict(empty).shape == (1,)


def test_predict_frame_for_classification(table):
    exported = load(table.export_dir)
    rows = table.raw_test.iloc[:7]
    frame = exported.predict_frame(rows)
    assert list(frame.columns) == ["prediction", "proba_high", "proba_low", "proba_mid"]
    assert frame.index.equals(rows.index)  # joins back to the user's rows
    np.testing.assert_array_equal(frame["prediction"], exported.predict(rows))
    probabilities = frame[["proba_high", "proba_low", "proba_mid"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(exported.classes[probabilities.argmax(axis=1)], frame["prediction"])


def test_predict_frame_for_a_forecast_indexes_windows_by_their_last_row(sequence):
    exported = load(sequence.export_dir)
    frame = exported.predict_frame(sequence.raw)
    window = sequence.bundle.input_shape[0]
    assert list(frame.columns) == ["prediction_1", "prediction_2"]  # one column per step ahead
    assert len(frame) == len(sequence.raw) - window + 1
    assert frame.index[0] == window - 1
    assert frame.index[-1] == sequence.raw.index[-1]
    np.testing.assert_array_equal(frame.to_numpy(), exported.predict(sequence.raw))


def test_images_as_numpy_torch_and_without_the_channel_axis_give_the_same(image):
    exported = load(image.export_dir)
    raw = image.raw_test[:20]  # [20, 1, 8, 8] pixel values 0-16
    expected = exported.predict_proba(raw)
    np.testing.assert_array_equal(exported.predict_proba(torch.from_numpy(raw)), expected)
    np.testing.assert_array_equal(exported.predict_proba(raw[:, 0]), expected)
    assert exported.predict(raw).dtype.kind in "iu"  # digits' labels are the integers 0-9


def test_batch_size_does_not_change_predictions(image):
    exported = load(image.export_dir)
    raw = image.raw_test[:50]
    np.testing.assert_allclose(
        exported.predict_proba(raw, batch_size=7), exported.predict_proba(raw), rtol=1e-5, atol=1e-7
    )


def test_loading_and_predicting_never_unpickle(table, image, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    for trained in (table, image):
        for backend in BACKENDS:
            exported = load(trained.export_dir, backend=backend)
            assert len(trained.on_test(exported.predict)) == len(trained.bundle.y_test)


def test_metadata_describes_the_model(table):
    metadata = json.loads((table.export_dir / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["format"] == "tunelab-export"
    assert metadata["versions"]["torch"] == torch.__version__
    assert metadata["task"] == "classification"
    assert metadata["kind"] == "table"
    assert metadata["class_names"] == ["high", "low", "mid"]
    assert metadata["input_columns"] == ["age", "income", "color"]
    assert metadata["input_shape"] == [2 + 3]
    assert metadata["output_dim"] == 3
    assert metadata["model_spec"] == table.spec.model_dump(mode="json")
    assert metadata["files"] == {
        "weights": "model.pt",
        "torchscript": "model.ts",
        "onnx": None,
        "preprocessor": "preprocessor.json",
    }
    assert metadata["metrics"] == {"val_accuracy": 0.5}
    assert metadata["best_params"] == {"lr": 0.01}
    assert load(table.export_dir).metadata["best_params"] == {"lr": 0.01}


def test_export_leaves_the_model_as_it_was(tmp_path, table):
    model = table.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(
        tmp_path / "again",
        model=model,
        preprocessor=table.bundle.preprocessor,
        model_spec=table.spec,
        task="classification",
        input_shape=table.bundle.input_shape,
        output_dim=3,
    )
    assert model.training
    assert all(m.training for m in model.modules())
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)  # BatchNorm statistics untouched


def test_reexport_replaces_files_of_the_previous_export(tmp_path, image):
    directory = tmp_path / "export"
    (directory).mkdir()
    (directory / "model.onnx").write_bytes(b"stale")
    export_model(
        directory,
        model=image.model,
        preprocessor=None,
        model_spec=None,
        task="classification",
        input_shape=image.bundle.input_shape,
        output_dim=10,
        onnx=False,
    )
    assert not (directory / "model.onnx").exists()
    assert not (directory / "preprocessor.json").exists()


def test_without_preprocessor_the_model_takes_model_inputs_and_returns_class_ids(tmp_path, image):
    directory = export_model(
        tmp_path / "bare",
        model=image.model,
        preprocessor=None,
        model_spec=None,
        task="classification",
        input_shape=image.bundle.input_shape,
        output_dim=10,
    )
    exported = load(directory)
    x = image.bundle.X_test
    np.testing.assert_allclose(exported.predict_proba(x), image.expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(exported.predict(x), image.expected.argmax(axis=1))


def test_one_logit_binary_classifier(tmp_path):
    model = build_model({"type": "mlp", "hidden": []}, input_shape=(3,), output_dim=1, seed=0)
    directory = export_model(
        tmp_path / "binary",
        model=model,
        preprocessor=None,
        model_spec={"type": "mlp", "hidden": []},
        task="classification",
        input_shape=(3,),
        output_dim=1,
    )
    exported = load(directory, backend="weights")
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        positive = torch.sigmoid(model.eval()(x))[:, 0].numpy()
    probabilities = exported.predict_proba(x)
    assert exported.n_classes == 2
    assert probabilities.shape == (6, 2)
    np.testing.assert_allclose(probabilities[:, 1], positive, rtol=1e-6)
    np.testing.assert_array_equal(exported.predict(x), (positive > 0.5).astype(int))


def test_find_export_accepts_a_run_directory_with_best(tmp_path, image):
    run = tmp_path / "runs" / "x"
    shutil.copytree(image.export_dir, run / "best")
    (run / "summary.json").write_text("{}", encoding="utf-8")
    assert find_export(run) == run / "best"
    assert find_export(run / "best") == run / "best"
    assert isinstance(load(run), ExportedModel)
    assert load(run).path == run / "best"
