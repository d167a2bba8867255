"""The import contracts: docs/ARCHITECTURE.md's "## Layers" is the layers contract of pyproject.toml, and
`lint-imports` (import-linter) catches what the contracts forbid, in a copy of the package with one import
added."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

LAYERS = "Layers: a room imports only rooms below it"
PRIVATE = "Private modules: tunelab.x._y is imported only from within tunelab.x"
NO_TORCH = "search and storage import no torch"


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def _doc_layers() -> list[list[str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = re.search(r"^## Layers\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, "docs/ARCHITECTURE.md has no '## Layers' section"
    layers = []
    for line in section.group(1).splitlines():
        room = re.match(r"- (`[\w.]+`(?: \| `[\w.]+`)*) — \S", line)
        if room:
            layers.append([name.strip(" `") for name in room.group(1).split("|")])
    return layers


def test_architecture_layers_are_the_layers_contract() -> None:
    contract = _contracts()["layers"]
    assert contract["type"] == "layers"
    assert contract["containers"] == ["tunelab"]
    configured = [
        [f"tunelab.{room.strip().strip('()')}" for room in layer.split("|")] for layer in contract["layers"]
    ]
    documented = _doc_layers()
    assert documented, "no '- `tunelab.x` — what it holds' lines in docs/ARCHITECTURE.md's '## Layers'"
    assert documented == configured


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of src/tunelab under tmp_path, for one test to break."""
    if not LINT_IMPORTS.exists():
        pytest.skip(f"import-linter is not installed (no {LINT_IMPORTS}): pip install -e '.[dev]'")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "src" / "tunelab", tmp_path / "tunelab", ignore=ignore)
    return tmp_path / "tunelab"


def _add(package: Path, module: str, code: str) -> None:
    path = package / module
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    assert code not in text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n" + code + "\n", encoding="utf-8")


def _lint(package: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Run lint-imports on the copy with the real configuration: each contract's status (KEPT or BROKEN) and,
    for a broken one, what lint-imports printed about it."""
    env = {**os.environ, "PYTHONPATH": str(package.parent), "COLUMNS": "500", "NO_COLOR": "1"}
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=ROOT,  # the real pyproject.toml; lint-imports imports the custom contract type (tools/) from here
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    status = dict(re.findall(r"^(.+) (KEPT|BROKEN)$", output, re.MULTILINE))
    assert status, output
    assert result.returncode == (1 if "BROKEN" in status.values() else 0), output
    report = output.partition("\nBroken contracts\n")[2]
    broken = [name for name, state in status.items() if state == "BROKEN"]
    starts = sorted((report.index(f"\n{name}\n"), name) for name in broken)
    ends = [start for start, _ in starts[1:]] + ([len(report)] if starts else [])
    return status, {name: report[start:end] for (start, name), end in zip(starts, ends, strict=True)}


def _only_in(sections: dict[str, str], contract: str, violation: str) -> None:
    assert violation in sections.get(contract, ""), sections
    assert [name for name, text in sections.items() if violation in text] == [contract]


def test_the_tree_keeps_every_contract(package: Path) -> None:
    status, sections = _lint(package)
    assert set(status.values()) == {"KEPT"}, sections


def test_upward_import_breaks_the_layers(package: Path) -> None:
    _add(package, "train/_trainer.py", "def _upward() -> None:\n    import tunelab.tune  # noqa: F401")
    status, sections = _lint(package)
    assert status[LAYERS] == "BROKEN"
    assert "tunelab.train._trainer -> tunelab.tune" in sections[LAYERS]


def test_private_module_of_another_room_breaks_the_private_rule(package: Path) -> None:
    # fused is above train, so the layers allow the import; only the private rule forbids it.
    _add(package, "fused/_loss.py", "from tunelab.train._losses import resolve_loss  # noqa: F401")
    status, sections = _lint(package)
    assert status[LAYERS] == "KEPT"
    _only_in(sections, PRIVATE, "tunelab.fused._loss -> tunelab.train._losses")


def test_private_module_within_its_room_is_allowed(package: Path) -> None:
    _add(package, "search/_study.py", "from tunelab.search.space._parse import parse_nodes  # noqa: F401")
    _, sections = _lint(package)
    assert "tunelab.search._study -> tunelab.search.space._parse" not in "".join(sections.values())


def test_torch_in_search_breaks_the_torch_rule(package: Path) -> None:
    _add(package, "search/space/_parse.py", "import torch  # noqa: F401")
    status, sections = _lint(package)
    assert status[NO_TORCH] == "BROKEN"
    _only_in(sections, NO_TORCH, "tunelab.search.space._parse -> torch")


def test_storage_imports_neither_the_search_above_it_nor_torch(package: Path) -> None:
    _add(package, "storage/__init__.py", "import torch  # noqa: F401\nimport tunelab.search  # noqa: F401")
    status, sections = _lint(package)
    assert status[LAYERS] == "BROKEN"
    assert "tunelab.storage -> tunelab.search" in sections[LAYERS]
    assert "tunelab.storage -> torch" in sections[NO_TORCH]
