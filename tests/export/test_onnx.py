"""ONNX: the missing extra's error; outputs equal to TorchScript's when onnx and onnxruntime exist."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tunelab.errors import MissingExtraError
from tunelab.export import ONNX_OPSET, export_model, load


def _export(directory: Path, trained, *, onnx: bool | None) -> Path:
    bundle = trained.bundle
    return export_model(
        directory,
        model=trained.model,
        preprocessor=bundle.preprocessor,
        model_spec=trained.spec,
        task=bundle.task,
        input_shape=bundle.input_shape,
        output_dim=bundle.output_dim,
        onnx=onnx,
    )


def test_asking_for_onnx_without_the_extra_names_the_install_command(tmp_path: Path, image, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError, as when not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'tunelab\[onnx\]'") as caught:
        _export(tmp_path / "export", image, onnx=True)
    assert caught.value.extra == "onnx"
    assert not (tmp_path / "export").exists()  # refused before anything was written


@pytest.mark.parametrize("installed", [False, True])
def test_by_default_onnx_is_written_when_installed(tmp_path: Path, image, monkeypatch, installed):
    if installed:
        pytest.importorskip("onnx")
    else:
        monkeypatch.setitem(sys.modules, "onnx", None)
    directory = _export(tmp_path / "export", image, onnx=None)
    assert (directory / "model.onnx").exists() == installed
    assert load(directory).metadata["files"]["onnx"] == ("model.onnx" if installed else None)


@pytest.mark.parametrize("trained", ["image", "sequence"], indirect=True)
def test_onnx_computes_what_torchscript_computes(tmp_path: Path, trained):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    directory = _export(tmp_path / "export", trained, onnx=True)
    metadata = load(directory).metadata
    assert metadata["files"]["onnx"] == "model.onnx"
    assert metadata["onnx_opset"] == ONNX_OPSET
    session = onnxruntime.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    scripted = load(directory, backend="torchscript").module
    for x in (trained.bundle.X_test, trained.bundle.X_test[:3]):  # the batch axis is dynamic
        (got,) = session.run(["output"], {"input": x.numpy()})
        np.testing.assert_allclose(got, scripted(x).detach().numpy(), rtol=1e-4, atol=1e-5)
