"""The ONNX runtime backend: any export's model.onnx runs with onnxruntime (``load(backend="onnx")``), and an
export of an ONNX graph alone (``export_onnx_model``, here an int8 copy made by onnxruntime's dynamic
quantization) loads with ``load(path)`` and predicts through the API and ``tunelab predict`` like any
other."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tests.export.conftest import make_people
from typer.testing import CliRunner

from tunelab.cli import app
from tunelab.data import DataBundle, DataSpec, prepare_data
from tunelab.errors import DataError, MissingExtraError, SpecError
from tunelab.export import ONNX_OPSET, OnnxModule, export_model, export_onnx_model, load
from tunelab.models import build_model, parse_model_spec
from tunelab.train import Trainer, TrainSpec

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

runner = CliRunner()


@dataclass(frozen=True)
class OnnxExports:
    """One trained model: its fp32 export (with model.onnx), and an int8 copy of its graph exported alone."""

    bundle: DataBundle
    raw: pd.DataFrame  # every row, as the user has them (the target column included)
    fp32: Path
    int8: Path
    int8_graph: Path  # the quantized graph that `int8` was exported from


def _exports(
    root: Path, bundle: DataBundle, raw: pd.DataFrame, spec_data: dict, train: TrainSpec
) -> OnnxExports:
    spec = parse_model_spec(spec_data)
    model = build_model(spec, input_shape=bundle.input_shape, output_dim=bundle.output_dim, seed=0)
    trainer = Trainer(
        model, train, task=bundle.task, n_classes=bundle.n_classes, target_scale=bundle.target_scale
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest on one thread of a shared CPU
    try:
        trainer.fit((bundle.X_train, bundle.y_train))
    finally:
        torch.set_num_threads(threads)
    common = {
        "preprocessor": bundle.preprocessor,
        "model_spec": spec,
        "task": bundle.task,
        "input_shape": bundle.input_shape,
        "output_dim": bundle.output_dim,
    }
    fp32 = export_model(root / "fp32", model=trainer.model, onnx=True, **common)
    int8_graph = root / "model.int8.onnx"
    quantization.quantize_dynamic(
        str(fp32 / "model.onnx"), str(int8_graph), weight_type=quantization.QuantType.QInt8
    )
    int8 = export_onnx_model(
        root / "int8", onnx_file=int8_graph, metadata={"compression": {"quantization": "int8"}}, **common
    )
    return OnnxExports(bundle, raw, fp32, int8, int8_graph)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> OnnxExports:
    """An MLP classifier of a 3-class text label from numeric and categorical columns."""
    root = tmp_path_factory.mktemp("onnx-classifier")
    make_people(n_rows=300).to_csv(root / "people.csv", index=False)
    raw = pd.read_csv(root / "people.csv")
    bundle = prepare_data(DataSpec(source=str(root / "people.csv"), target="label"), seed=0)
    return _exports(root, bundle, raw, {"type": "mlp", "hidden": [16]}, TrainSpec(epochs=30, batch_size=32))


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory) -> OnnxExports:
    """An MLP regressor of a target in the thousands (mean 5,000, std about 800)."""
    root = tmp_path_factory.mktemp("onnx-regressor")
    rng = np.random.default_rng(1)
    n_rows = 240
    frame = pd.DataFrame({"a": rng.normal(size=n_rows), "b": rng.uniform(0, 10, n_rows)})
    frame["price"] = 5_000 + 600 * frame["a"] - 80 * (frame["b"] - 5) + rng.normal(0, 50, n_rows)
    frame.to_csv(root / "prices.csv", index=False)
    bundle = prepare_data(DataSpec(source=str(root / "prices.csv"), target="price"), seed=0)
    assert bundle.task == "regression"
    return _exports(
        root, bundle, frame, {"type": "mlp", "hidden": [16]}, TrainSpec(epochs=60, batch_size=32, lr=1e-2)
    )


def _features(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    return frame.drop(columns=target)


# ---------------------------------------------------------------------- an fp32 export's model.onnx


def test_the_onnx_backend_predicts_what_the_weights_predict(classifier):
    rows = _features(classifier.raw, "label")
    by_onnx = load(classifier.fp32, backend="onnx")
    by_weights = load(classifier.fp32, backend="weights")
    assert by_onnx.backend == "onnx"
    assert isinstance(by_onnx.module, OnnxModule)
    assert by_onnx.module.path == classifier.fp32 / "model.onnx"
    np.testing.assert_allclose(by_onnx.predict_proba(rows), by_weights.predict_proba(rows), rtol=0, atol=1e-5)
    assert list(by_onnx.predict(rows)) == list(by_weights.predict(rows))
    frame = by_onnx.predict_frame(rows.iloc[:7])  # the batch axis is dynamic
    pd.testing.assert_frame_equal(frame, by_weights.predict_frame(rows.iloc[:7]), atol=1e-5)
    # auto keeps torch for an export whose runtime is torch
    assert load(classifier.fp32).backend == "torchscript"
    assert load(classifier.fp32).metadata["runtime"] == "torch"


def test_a_regressor_through_onnx_gives_values_in_the_target_units(regressor):
    rows = _features(regressor.raw, "price")
    by_onnx = load(regressor.fp32, backend="onnx").predict(rows)
    by_weights = load(regressor.fp32, backend="weights").predict(rows)
    assert by_onnx.shape == (len(rows),)
    np.testing.assert_allclose(by_onnx, by_weights, rtol=1e-5, atol=1e-3)
    # In the thousands, and close to the prices: standardized outputs would be near 0.
    assert np.abs(by_onnx - regressor.raw["price"]).mean() < 0.5 * regressor.raw["price"].std()


def test_threads_set_the_session_s_intra_op_threads(classifier):
    module = load(classifier.fp32, backend="onnx", threads=1).module
    assert isinstance(module, OnnxModule)
    assert module.threads == 1
    options = module.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert module.session.get_providers() == ["CPUExecutionProvider"]


# ---------------------------------------------------------------------- an int8 graph exported alone


def test_an_int8_export_loads_by_default_with_onnxruntime(classifier):
    exported = load(classifier.int8)
    assert exported.backend == "onnx"
    assert isinstance(exported.module, OnnxModule)
    assert not (classifier.int8 / "model.pt").exists()
    assert not (classifier.int8 / "model.ts").exists()
    # The graph really is quantized: its weights are int8 tensors.
    graph = onnx.load(str(classifier.int8 / "model.onnx"))
    assert any(tensor.data_type == onnx.TensorProto.INT8 for tensor in graph.graph.initializer)
    assert (classifier.int8 / "model.onnx").read_bytes() == classifier.int8_graph.read_bytes()


def test_an_int8_export_predicts_the_data_s_labels_and_agrees_with_fp32(classifier):
    rows = _features(classifier.raw, "label")
    quantized, full = load(classifier.int8), load(classifier.fp32)
    labels = quantized.predict(rows)
    assert set(labels) <= {"high", "mid", "low"}
    assert list(quantized.classes) == ["high", "low", "mid"]
    agreement = float(np.mean(labels == full.predict(rows)))
    assert agreement >= 0.99, agreement
    probabilities = quantized.predict_proba(rows)
    assert probabilities.shape == (len(rows), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    frame = quantized.predict_frame(rows)
    assert list(frame.columns) == ["prediction", "proba_high", "proba_low", "proba_mid"]
    assert list(frame["prediction"]) == list(labels)


def test_an_int8_regressor_predicts_in_the_target_units(regressor):
    rows = _features(regressor.raw, "price")
    quantized = load(regressor.int8).predict(rows)
    full = load(regressor.fp32).predict(rows)
    assert quantized.shape == (len(rows),)
    spread = regressor.raw["price"].std()
    assert np.abs(quantized - full).max() < 0.1 * spread  # int8 moves a value by a fraction of the spread
    assert np.abs(quantized - regressor.raw["price"]).mean() < 0.5 * spread


def test_the_int8_export_s_metadata(classifier):
    metadata = json.loads((classifier.int8 / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["format"] == "tunelab-export"
    assert metadata["format_version"] == 2  # an older tunelab asks to be upgraded instead of failing
    assert metadata["runtime"] == "onnxruntime"
    assert metadata["files"] == {
        "weights": None,
        "torchscript": None,
        "onnx": "model.onnx",
        "preprocessor": "preprocessor.json",
    }
    assert metadata["versions"]["onnxruntime"] == onnxruntime.__version__
    assert metadata["onnx_opset"] == ONNX_OPSET
    assert metadata["task"] == "classification"
    assert (metadata["kind"], metadata["input_shape"], metadata["output_dim"]) == ("table", [5], 3)
    assert (metadata["n_classes"], metadata["class_names"]) == (3, ["high", "low", "mid"])
    assert metadata["input_columns"] == ["age", "income", "color"]
    assert metadata["model_spec"]["hidden"] == [16]
    assert metadata["compression"] == {"quantization": "int8"}
    fp32 = json.loads((classifier.fp32 / "metadata.json").read_text(encoding="utf-8"))
    assert (fp32["format_version"], fp32["runtime"]) == (1, "torch")


def test_tunelab_predict_runs_an_int8_export(classifier, tmp_path: Path):
    rows = _features(classifier.raw, "label").iloc[:40]
    rows.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "predictions.csv"
    result = runner.invoke(
        app, ["predict", str(classifier.int8), str(tmp_path / "new.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 40 predictions" in " ".join(result.output.split())
    written = pd.read_csv(out)
    expected = load(classifier.int8).predict_frame(rows)
    assert list(written["prediction"]) == list(expected["prediction"])
    np.testing.assert_allclose(written["proba_high"], expected["proba_high"], atol=1e-6)


def test_a_graph_can_replace_the_export_it_came_from(classifier, tmp_path: Path):
    """Exporting a graph over a torch export, from that export's own model.onnx: the stale weights and
    TorchScript go, and the graph is kept."""
    directory = shutil.copytree(classifier.fp32, tmp_path / "export")
    bundle = classifier.bundle
    export_onnx_model(
        directory,
        onnx_file=directory / "model.onnx",
        preprocessor=bundle.preprocessor,
        model_spec=None,
        task=bundle.task,
        input_shape=bundle.input_shape,
        output_dim=bundle.output_dim,
    )
    assert sorted(path.name for path in directory.iterdir()) == [
        "metadata.json",
        "model.onnx",
        "preprocessor.json",
        "preprocessor.npz",
    ]
    rows = _features(classifier.raw, "label")
    np.testing.assert_allclose(
        load(directory).predict_proba(rows), load(classifier.fp32).predict_proba(rows), rtol=0, atol=1e-5
    )


def test_an_export_from_before_the_runtime_field_still_loads(classifier, copy_export):
    directory = copy_export(classifier.fp32)
    metadata = json.loads((directory / "metadata.json").read_text(encoding="utf-8"))
    del metadata["runtime"]
    (directory / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    assert load(directory).backend == "torchscript"
    assert load(directory, backend="onnx").backend == "onnx"


# ---------------------------------------------------------------------- errors at load and predict time


def test_a_damaged_graph_is_a_data_error_and_exit_2(classifier, copy_export, tmp_path: Path):
    directory = copy_export(classifier.int8)
    (directory / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(
        DataError, match=r"model.onnx is damaged or not a tunelab ONNX graph.*Export the model"
    ):
        load(directory)
    _features(classifier.raw, "label").iloc[:3].to_csv(tmp_path / "new.csv", index=False)
    result = runner.invoke(app, ["predict", str(directory), str(tmp_path / "new.csv"), "--out", "x.csv"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert "model.onnx is damaged" in output


def test_a_missing_graph_is_named(classifier, copy_export):
    directory = copy_export(classifier.int8)
    (directory / "model.onnx").unlink()
    with pytest.raises(DataError, match=r"lacks model.onnx"):
        load(directory)


def test_the_onnx_backend_on_an_export_without_a_graph_names_the_fix(table):
    with pytest.raises(DataError, match=r"has no model.onnx.*backend='auto'.*onnx=True"):
        load(table.export_dir, backend="onnx")


@pytest.mark.parametrize("backend", ["torchscript", "weights"])
def test_torch_backends_on_a_graph_alone_point_at_onnx(classifier, backend):
    with pytest.raises(DataError, match=r"only as an ONNX graph.*backend='auto' or 'onnx'"):
        load(classifier.int8, backend=backend)


def test_running_an_onnx_export_without_onnxruntime(classifier, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails, as when not installed
    with pytest.raises(
        MissingExtraError, match=r"running an ONNX export.*pip install 'tunelab\[onnx\]'"
    ) as caught:
        load(classifier.int8)
    assert caught.value.extra == "onnx"
    with pytest.raises(MissingExtraError):
        load(classifier.fp32, backend="onnx")
    assert load(classifier.fp32).backend == "torchscript"  # torch exports need no onnxruntime


def test_exporting_a_graph_without_onnxruntime_writes_nothing(classifier, monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    bundle = classifier.bundle
    with pytest.raises(MissingExtraError):
        export_onnx_model(
            tmp_path / "export",
            onnx_file=classifier.int8_graph,
            preprocessor=bundle.preprocessor,
            model_spec=None,
            task=bundle.task,
            input_shape=bundle.input_shape,
            output_dim=bundle.output_dim,
        )
    assert not (tmp_path / "export").exists()


def test_onnx_runs_on_the_cpu_only(classifier):
    with pytest.raises(SpecError, match=r"runs on the CPU.*device='cpu'"):
        load(classifier.int8, device="cuda:0")


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_threads(classifier, threads):
    with pytest.raises(SpecError, match=r"threads must be None .* or an int >= 1"):
        load(classifier.int8, threads=threads)


def test_threads_with_a_torch_backend_is_refused(classifier):
    with pytest.raises(SpecError, match=r"runs on torch.*torch.set_num_threads\(2\)"):
        load(classifier.fp32, threads=2)


# ---------------------------------------------------------------------- errors at export time


def _graph(tmp_path: Path, *, input_name: str = "input", divide_by: float = 2.0) -> Path:
    """A hand-made graph [batch, 5] -> [batch, 5]: the input divided by ``divide_by``."""
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Div", [input_name, "divisor"], ["output"])],
        "divide",
        [helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor("divisor", onnx.TensorProto.FLOAT, [], [divide_by])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=8)
    path = tmp_path / f"{input_name}-{divide_by}.onnx"
    onnx.save(model, str(path))
    return path


def _export_graph(directory: Path, graph: Path, *, output_dim: int = 5) -> Path:
    return export_onnx_model(
        directory,
        onnx_file=graph,
        preprocessor=None,
        model_spec=None,
        task="regression",
        input_shape=(5,),
        output_dim=output_dim,
    )


def test_a_graph_without_a_preprocessor_takes_model_inputs(tmp_path: Path):
    exported = load(_export_graph(tmp_path / "export", _graph(tmp_path)))
    x = np.arange(15, dtype=np.float32).reshape(3, 5)
    np.testing.assert_allclose(exported.predict(x), x / 2)
    assert exported.metadata["onnx_opset"] == ONNX_OPSET
    assert exported.metadata["model_spec"] is None


def test_a_graph_of_another_output_size_is_refused_and_nothing_is_written(tmp_path: Path):
    with pytest.raises(SpecError, match=r"returns \[2, 5\] for a batch of 2; expected \[2, 3\]"):
        _export_graph(tmp_path / "export", _graph(tmp_path), output_dim=3)
    assert not (tmp_path / "export").exists()


def test_a_graph_with_values_that_are_not_finite_is_refused(tmp_path: Path):
    earlier = _export_graph(tmp_path / "export", _graph(tmp_path))
    with pytest.raises(SpecError, match=r"not finite"):
        _export_graph(earlier, _graph(tmp_path, divide_by=0.0))
    assert load(earlier).predict(np.ones((1, 5), dtype=np.float32)).tolist() == [[0.5] * 5]  # left as it was


def test_a_graph_with_other_input_names_is_refused(tmp_path: Path):
    with pytest.raises(SpecError, match=r"inputs are x \(tensor\(float\)\).*one float32 input named 'input'"):
        _export_graph(tmp_path / "export", _graph(tmp_path, input_name="x"))


def test_a_file_that_is_not_a_graph_is_refused(tmp_path: Path):
    (tmp_path / "model.onnx").write_text("hello")
    with pytest.raises(SpecError, match=r"cannot be exported: onnxruntime cannot open it"):
        _export_graph(tmp_path / "export", tmp_path / "model.onnx")
    with pytest.raises(SpecError, match=r"is not a file"):
        _export_graph(tmp_path / "export", tmp_path / "nowhere.onnx")


def test_an_unknown_backend_lists_onnx_among_the_choices(classifier):
    with pytest.raises(
        SpecError, match=r"backend must be one of auto, torchscript, weights, onnx; got 'tensorrt'"
    ):
        load(classifier.fp32, backend="tensorrt")  # type: ignore[arg-type]
