"""An ensemble exports as one model: load() rebuilds or runs it, predict() averages its members."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.export import export_model, load
from tunelab.models import Ensemble, EnsembleSpec, build_model, combine_rule
from tunelab.train import Trainer, TrainSpec


def _export(directory: Path, trained, *, onnx: bool) -> tuple[Path, Ensemble]:
    bundle = trained.bundle
    ensemble, spec = _ensemble(trained)
    exported = export_model(
        directory,
        model=ensemble,
        preprocessor=bundle.preprocessor,
        model_spec=spec,
        task=bundle.task,
        input_shape=bundle.input_shape,
        output_dim=bundle.output_dim,
        onnx=onnx,
    )
    return exported, ensemble


def _ensemble(trained) -> tuple[Ensemble, EnsembleSpec]:
    """The fixture's trained model with a second, differently seeded one of its spec, weighted 2:1."""
    bundle = trained.bundle
    other = build_model(trained.spec, input_shape=bundle.input_shape, output_dim=bundle.output_dim, seed=5)
    spec = EnsembleSpec(
        members=[trained.spec, trained.spec],
        weights=[2.0, 1.0],
        combine="probabilities" if bundle.task == "classification" else "mean",
    )
    combine = combine_rule(spec.combine, bundle.output_dim)
    return Ensemble([copy.deepcopy(trained.model), other], spec.weights, combine=combine), spec


@pytest.mark.parametrize("trained", ["table", "image", "sequence"], indirect=True)
@pytest.mark.parametrize("backend", ["torchscript", "weights"])
def test_an_exported_ensemble_predicts_what_it_predicted_in_process(tmp_path: Path, trained, backend):
    bundle = trained.bundle
    directory, ensemble = _export(tmp_path / "export", trained, onnx=False)
    loaded = load(directory, backend=backend)
    assert loaded.metadata["model_spec"]["type"] == "ensemble"
    assert loaded.metadata["model_spec"]["weights"] == [2.0, 1.0]
    trainer = Trainer(
        ensemble, TrainSpec(), task=bundle.task, n_classes=bundle.n_classes, target_scale=bundle.target_scale
    )
    expected = trainer.predict(bundle.X_test).numpy()
    if bundle.task == "classification":
        got = trained.on_test(loaded.predict_proba)
        # Soft voting: the weighted mean of the members' probabilities.
        members = [torch.softmax(m.eval()(bundle.X_test), dim=1) for m in ensemble.members]
        np.testing.assert_allclose(expected, (2 * members[0] + members[1]).detach().numpy() / 3, atol=1e-5)
    else:
        got = trained.on_test(loaded.predict).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("trained", ["image", "sequence"], indirect=True)
def test_an_ensemble_in_onnx_computes_what_torchscript_computes(tmp_path: Path, trained):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    bundle = trained.bundle
    directory, _ = _export(tmp_path / "export", trained, onnx=True)
    session = onnxruntime.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    scripted = load(directory, backend="torchscript").module
    (got,) = session.run(["output"], {"input": bundle.X_test.numpy()})
    np.testing.assert_allclose(got, scripted(bundle.X_test).detach().numpy(), rtol=1e-4, atol=1e-5)
