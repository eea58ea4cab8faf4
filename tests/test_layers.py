"""The package's import discipline, in one place: which layer may import which
(docs/architecture.md), and which never load TensorFlow.

Read from the source (every import, a function's lazy ones included, except under
``TYPE_CHECKING``), then checked at run time in a fresh interpreter that imports every
TensorFlow-free module and the CLI, prints a rule, samples every paper space and runs a controller
round.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "localrules"

BOTTOM = {"localrules", "validation"}
"""The package itself (``__version__``) and the input checks: importable from anywhere."""
LAYERS: dict[str, set[str]] = {
    "validation": set(),
    "jsonsafe": set(),
    "logs": set(),  # the terminal: stdlib logging and tqdm
    "results": {"jsonsafe"},
    "rules": set(),
    "models": {"rules"},
    "data": set(),
    "config": {"rules"},
    "runs": {"config", "jsonsafe"},
    "snapshots": {"runs"},
    "train": {"config", "data", "jsonsafe", "models", "results", "rules", "runs", "snapshots"},
    "spaces": {"config", "rules"},
    "store": {"config", "jsonsafe", "results"},  # results: the stdlib-only result schema
    "search": {"config", "results", "rules", "spaces", "store"},
    "analysis": {"config", "jsonsafe", "results", "rules", "runs", "snapshots", "spaces",
                 "store"},
    "worker": {"config", "data", "jsonsafe", "logs", "models", "results", "rules", "runs",
               "search", "snapshots", "spaces", "store", "train"},
    "raytune": {"config", "data", "jsonsafe", "logs", "models", "results", "rules", "runs",
                "search", "snapshots", "spaces", "store", "train", "worker"},
    "dashboard": {"analysis", "config", "jsonsafe", "results", "rules", "runs", "snapshots",
                  "spaces", "store"},
    "cli": {"analysis", "config", "dashboard", "data", "jsonsafe", "logs", "models", "raytune",
            "results", "rules", "runs", "search", "snapshots", "spaces", "store", "train",
            "worker"},
}
"""Each layer (a subpackage or a top-level module) and the layers it may import: lower ones only.
The controller's layers (config, spaces, store, search) and analysis sit beside the TensorFlow
stack (rules' layers, models, data, train), never on top of it."""

ROOT_LAZY = {"store"}
"""What the package root's conveniences (``localrules.open_store``) import when called, inside
the function, never when ``localrules`` is imported (every layer imports the root)."""

WITHOUT_TENSORFLOW = ("validation", "jsonsafe", "logs", "results", "config", "spaces", "store",
                      "search", "analysis", "dashboard")
"""Layers that never import TensorFlow or Keras, not even lazily: a controller on a small VM, the
reports and the CLI's parser start in about a second and hold no accelerator."""
HEAVY = ("tensorflow", "keras")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "localrules"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module an import statement names (``from localrules import x`` names
    ``localrules.x``), with its line, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
            if node.module == "localrules":  # a submodule, not __version__
                found += [(f"localrules.{alias.name}", node.lineno) for alias in node.names
                          if (PACKAGE / alias.name).is_dir()
                          or (PACKAGE / f"{alias.name}.py").is_file()]
    return found


MODULES = _modules()


def test_every_layer_is_in_the_table():
    layers = {_layer(name) for name, _ in MODULES} - {"localrules"}
    assert layers == set(LAYERS), "add the new layer to LAYERS and docs/architecture.md"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_a_layer_imports_only_the_layers_below_it(module, path):
    layer = _layer(module)
    allowed = LAYERS.get(layer, set()) | BOTTOM | {layer}
    if module == "localrules":
        allowed |= ROOT_LAZY
        top = [n for n in ast.parse(path.read_text()).body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
        eager = [ast.unparse(n) for n in top if any(
            f"localrules.{lazy}" in ast.unparse(n) for lazy in ROOT_LAZY)]
        assert not eager, f"the package root imports {eager} when it is imported"
    wrong = [f"line {line}: {name}" for name, line in _imports(path)
             if name.startswith("localrules.") and _layer(name) not in allowed]
    assert not wrong, f"{module} ({layer}) may import {sorted(allowed)}; it imports {wrong}"
    if layer in WITHOUT_TENSORFLOW:
        heavy = [f"line {line}: {name}" for name, line in _imports(path)
                 if name.split(".")[0] in HEAVY]
        assert not heavy, f"{module} must not import TensorFlow: {heavy}"


def test_the_controller_the_reports_and_the_cli_run_without_tensorflow(tmp_path):
    light = [name for name, _ in MODULES
             if _layer(name) in (*WITHOUT_TENSORFLOW, "cli")
             or name in ("localrules.data", "localrules.data.stimuli", "localrules.models",
                         "localrules.rules")]
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {light!r}:
            importlib.import_module(name)
        from localrules.cli.main import main
        assert main(["rules", "show", "sa"]) == 0
        from localrules.data import DATASETS
        from localrules.models import MODELS
        assert "digits" in DATASETS and "resnet18" in MODELS
        from localrules.search import open_search
        from localrules.spaces import default_budget, load_space
        from localrules.store import open_store
        from hyperopt import Trials, rand
        from hyperopt.base import Domain
        from localrules.spaces import PAPER_SPACES
        for name in PAPER_SPACES:  # sample each paper space and build its config
            space = load_space(name, default_budget("digits"))
            (doc,) = rand.suggest([0], Domain(lambda p: 0, space.to_hyperopt()), Trials(), 1)
            space.config(space.params_from_vals(doc["misc"]["vals"]))
            space.describe()
        space = load_space("ia", default_budget("digits"))
        with open_store("sqlite:///{tmp_path}/c.db") as store:
            controller = open_search(store, "e", space, {{"max_trials": 2, "concurrency": 4}})
            assert controller.step() == 2  # beside the bp and fa references it queued
            assert len(store.trials("e")) == 4
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        assert not heavy, heavy
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")
