"""A user's own module: exported as TorchScript, it loads where its Python class does not exist."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tunelab.errors import DataError, SpecError
from tunelab.export import export_model, load
from tunelab.models import build_model


class GatedNet(nn.Module):
    """Not a tunelab family: a gated residual block with a learned temperature."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.inner = nn.Linear(n_in, n_in)
        self.gate = nn.Parameter(torch.linspace(-1.0, 1.0, n_in))
        self.temperature = nn.Parameter(torch.tensor(1.7))
        self.out = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + torch.sigmoid(self.gate) * torch.tanh(self.inner(x))
        return self.out(h) / self.temperature


class SignSwitchNet(nn.Module):
    """Data-dependent control flow: tracing would freeze one branch, so the export must script it."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 2)
        self.down = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            return self.up(x)
        return self.down(x)


class UncompilableNet(nn.Module):
    """Neither traceable (a tensor read into Python) nor scriptable (varargs)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        scale = float(inputs[0].abs().max()) + 1.0
        return self.linear(inputs[0]) / scale


def _gated(table) -> GatedNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        return GatedNet(table.bundle.input_shape[0], table.bundle.output_dim)


def test_user_module_loads_in_a_process_without_its_class(tmp_path: Path, table):
    model = _gated(table)
    directory = export_model(
        tmp_path / "export",
        model=model,
        preprocessor=table.bundle.preprocessor,
        model_spec=None,
        task="classification",
        input_shape=table.bundle.input_shape,
        output_dim=table.bundle.output_dim,
    )
    rows = tmp_path / "rows.csv"
    table.raw_test.to_csv(rows, index=False)
    out = tmp_path / "proba.npy"
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np, pandas as pd, torch
        from tunelab.export import load
        torch.set_num_threads(1)
        exported = load({str(directory)!r})
        assert exported.backend == "torchscript"
        assert not any("test_user_module" in name for name in sys.modules), "the test module was imported"
        np.save({str(out)!r}, exported.predict_proba(pd.read_csv({str(rows)!r})))
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = torch.softmax(model.eval()(table.bundle.X_test), dim=1).numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)


def test_user_module_without_a_spec_cannot_load_from_weights(tmp_path: Path, table):
    directory = export_model(
        tmp_path / "export",
        model=_gated(table),
        preprocessor=None,
        model_spec=None,
        task="classification",
        input_shape=table.bundle.input_shape,
        output_dim=table.bundle.output_dim,
    )
    with pytest.raises(DataError, match=r"only its TorchScript file can load it"):
        load(directory, backend="weights")


def test_data_dependent_branch_is_scripted_not_traced(tmp_path: Path):
    torch.manual_seed(0)
    model = SignSwitchNet()
    directory = export_model(
        tmp_path / "export",
        model=model,
        preprocessor=None,
        model_spec=None,
        task="regression",
        input_shape=(4,),
        output_dim=2,
    )
    exported = load(directory)
    assert exported.metadata["torchscript"] == "script"
    positive, negative = torch.full((3, 4), 0.5), torch.full((3, 4), -0.5)
    with torch.no_grad():  # both branches survive in the export, each as the class computes it
        np.testing.assert_allclose(exported.predict(positive), model(positive).numpy(), rtol=1e-6)
        np.testing.assert_allclose(exported.predict(negative), model(negative).numpy(), rtol=1e-6)


def test_uncompilable_module_without_spec_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SpecError, match=r"cannot be compiled to TorchScript") as caught:
        export_model(
            tmp_path / "export",
            model=UncompilableNet(),
            preprocessor=None,
            model_spec=None,
            task="regression",
            input_shape=(4,),
            output_dim=2,
        )
    assert "tracing froze a Python value" in str(caught.value)
    assert "scripting failed" in str(caught.value)
    assert not (tmp_path / "export").exists()  # nothing half-written


def test_uncompilable_module_with_a_spec_exports_weights_and_says_why(tmp_path: Path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "nets.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self, input_shape, output_dim):
                    super().__init__()
                    self.linear = nn.Linear(input_shape[0], output_dim)

                def forward(self, *inputs):
                    return self.linear(inputs[0]) / (float(inputs[0].abs().max()) + 1.0)
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"type": "custom", "factory": "userpkg.nets:Net"}
    model = build_model(spec, input_shape=(4,), output_dim=2, seed=0)
    directory = export_model(
        tmp_path / "export",
        model=model,
        preprocessor=None,
        model_spec=spec,
        task="regression",
        input_shape=(4,),
        output_dim=2,
    )
    assert not (directory / "model.ts").exists()
    exported = load(directory)
    assert exported.backend == "weights"
    assert "no model.ts" in exported.metadata["notices"][0]
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.testing.assert_allclose(exported.predict(x), model(x).numpy(), rtol=1e-6)
    with pytest.raises(DataError, match=r"has no TorchScript file"):
        load(directory, backend="torchscript")
