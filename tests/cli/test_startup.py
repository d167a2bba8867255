"""What the command line and the package import before they do any work.

torch, scikit-learn, Optuna, plotly and pandas take seconds to import, so `tunelab --help`, a bad option and
`import tunelab` must not import them, and `tunelab predict` must not import the search machinery. Each
check runs in a fresh interpreter: this one has imported everything already.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from tunelab.data import DataSpec, prepare_data
from tunelab.export import export_model
from tunelab.models import build_model, parse_model_spec

HEAVY = ("torch", "optuna", "sklearn", "plotly", "pandas")
SEARCH = ("optuna", "plotly", "tunelab.search")

# Runs the `tunelab` command's entry point in-process on ARGS and prints its exit code, then the modules
# of WATCH it imported.
RUN_MAIN = """
import sys
from tunelab.cli import main

sys.argv = ["tunelab", *ARGS]
try:
    main()
except SystemExit as stop:
    print(stop.code or 0)
else:
    print(0)
print(",".join(name for name in WATCH if name in sys.modules))
"""


def _python(code: str, cwd: Path | None = None) -> list[str]:
    """Run ``code`` in a fresh interpreter with this one's import path; its stdout's lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _run_main(args: list[str], watch: tuple[str, ...], cwd: Path | None = None) -> tuple[int, list[str]]:
    """The exit code of `tunelab ARGS`, and which of ``watch`` it imported."""
    code = f"ARGS = {args!r}\nWATCH = {watch!r}\n{RUN_MAIN}"
    *_, exit_code, imported = _python(code, cwd=cwd)
    return int(exit_code), [name for name in imported.split(",") if name]


def test_help_imports_nothing_heavy():
    assert _run_main(["--help"], HEAVY) == (0, [])


def test_every_command_help_imports_nothing_heavy():
    for command in ("train", "demo", "dashboard", "tune", "report", "predict"):
        assert _run_main([command, "--help"], HEAVY) == (0, []), command


def test_bad_option_exits_2_without_torch():
    assert _run_main(["tune", "--no-such-option"], HEAVY) == (2, [])


def test_import_tunelab_is_lazy_and_names_resolve():
    lines = _python(
        """
        import sys
        import tunelab

        print("torch" in sys.modules)
        print(tunelab.train_experiment.__module__, tunelab.Trainer.__name__, tunelab.train.TrainSpec.__name__)
        print(sorted(set(tunelab.__all__) - set(dir(tunelab))))
        """
    )
    assert lines == ["False", "tunelab.run Trainer TrainSpec", "[]"]


def test_predict_does_not_import_the_search(tmp_path):
    """`tunelab predict` on a small exported model: it loads the model, writes predictions, and never
    imports Optuna, plotly or tunelab.search."""
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"a": rng.normal(size=60), "b": rng.choice(["x", "y"], 60)})
    rows["label"] = np.where(rows["a"] > 0, "up", "down")
    rows.to_csv(tmp_path / "rows.csv", index=False)
    bundle = prepare_data(DataSpec(source=str(tmp_path / "rows.csv"), target="label"), seed=0)
    spec = parse_model_spec({"type": "mlp", "hidden": [4]})
    export_model(
        tmp_path / "run" / "best",
        model=build_model(spec, input_shape=bundle.input_shape, output_dim=bundle.output_dim, seed=0),
        preprocessor=bundle.preprocessor,
        model_spec=spec,
        task=bundle.task,
        input_shape=bundle.input_shape,
        output_dim=bundle.output_dim,
        onnx=False,
    )
    rows.drop(columns="label").to_csv(tmp_path / "new.csv", index=False)

    args = ["predict", str(tmp_path / "run"), str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv")]
    assert _run_main(args, SEARCH) == (0, [])
    assert len(pd.read_csv(tmp_path / "p.csv")) == 60
