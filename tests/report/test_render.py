"""The report in a real browser (headless Chromium): it loads without JavaScript errors, fetches nothing, and
every plot is drawn."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

PLOT_DIVS = "Array.from(document.querySelectorAll('.plotly-graph-div'))"
# Plotly draws each figure into an SVG of class main-svg inside its div; a figure that failed leaves it empty.
DRAWN = f"{PLOT_DIVS}.every(d => d.querySelector('svg.main-svg') !== null)"
PROBES = {
    "plots": f"{PLOT_DIVS}.map(d => [d.id, d.querySelectorAll('svg.main-svg').length, "
    "d.querySelectorAll('.trace, .cartesianlayer .plot path, .heatmaplayer image').length])",
    "width": "document.documentElement.scrollWidth",
    "viewport": "window.innerWidth",
}


@pytest.mark.parametrize("kind", ["classification", "regression", "train"])
def test_report_renders_every_plot_without_errors(
    browser, reports: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    page = reports[kind]
    expected = set(re.findall(r'<div id="(plot-[a-z-]+)" class="plotly-graph-div"', page.read_text()))
    shot = tmp_path / f"{kind}.png"
    result = browser.render(page, probes=PROBES, ready=DRAWN, screenshot=shot, height=1600)

    assert result.exceptions == []
    assert result.console_errors == []
    # offline: the page itself, and the data: URIs plotly makes for its own patterns, nothing else
    assert [u for u in result.network_requests if not u.startswith(("file://", "data:"))] == []
    drawn = {plot_id: (n_svg, n_marks) for plot_id, n_svg, n_marks in result.probes["plots"]}
    assert set(drawn) == expected
    for plot_id, (n_svg, n_marks) in drawn.items():
        assert n_svg >= 1, f"{plot_id} has no SVG: plotly did not draw it"
        assert n_marks >= 1, f"{plot_id} was drawn empty"
    assert result.probes["width"] <= result.probes["viewport"], "the page scrolls sideways"
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_multi_objective_report_renders(browser, classification_run: Path, tmp_path: Path) -> None:
    """The Pareto front, and the single-objective plots drawn on the first objective, in the browser."""
    import shutil

    import optuna

    from tunelab.report._html import build_report

    run_dir = tmp_path / "run"
    shutil.copytree(classification_run, run_dir, ignore=shutil.ignore_patterns("study.db", "report.html"))
    study = optuna.create_study(
        study_name=json.loads((run_dir / "summary.json").read_text())["name"],
        storage=f"sqlite:///{run_dir / 'study.db'}",
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    result = browser.render(build_report(run_dir), probes=PROBES, ready=DRAWN)
    assert result.exceptions == []
    assert result.console_errors == []
    assert "plot-pareto" in {plot_id for plot_id, *_ in result.probes["plots"]}


def test_compression_sections_render(browser, classification_run: Path, tmp_path: Path) -> None:
    """`tunelab compress` adds the front and the MACs-against-latency plots; both draw, with the front's
    table, in the browser."""
    import shutil

    from tunelab.compress import compress_run
    from tunelab.spec import CompressSpec

    run_dir = tmp_path / "run"
    shutil.copytree(classification_run, run_dir)
    compress_run(
        run_dir, CompressSpec(budget="8s", widths=[1.0, 0.5], sparsities=[0.0], max_epochs=2, max_drop=5.0)
    )
    page = run_dir / "report.html"
    result = browser.render(page, probes=PROBES, ready=DRAWN, height=1600)
    assert result.exceptions == []
    assert result.console_errors == []
    drawn = {plot_id: (n_svg, n_marks) for plot_id, n_svg, n_marks in result.probes["plots"]}
    for plot_id in ("plot-compression", "plot-compression-macs"):
        assert drawn[plot_id][0] >= 1
        assert drawn[plot_id][1] >= 1, f"{plot_id} was drawn empty"
    assert "within --max-drop of the winner" in page.read_text() or "winner stays" in page.read_text()
