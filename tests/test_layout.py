"""The package layout is the architecture (docs/design.md): these tests keep it so.

* ``rnnapps.models`` never imports ``rnnapps.data`` or ``rnnapps.pipelines``; the text
  operations both sides need live in ``rnnapps.text_ops``, which imports neither.
* Every pipeline's ``model.keras`` loads in a fresh interpreter after ``import rnnapps.models``
  alone, so a user who imports our layers into their own Keras code can load our models.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnnapps.pipelines import names

PACKAGE = Path(__file__).resolve().parents[1] / "rnnapps"


def _rnnapps_imports(path: Path) -> set[str]:
    """Every ``rnnapps...`` module that ``path`` imports, at any depth (function-local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rnnapps"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnapps"):
            found.add(node.module)
            # ``from rnnapps import data`` imports the subpackage by its attribute name.
            if node.module == "rnnapps":
                found.update(f"rnnapps.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(
    "modules, forbidden",
    [
        (sorted((PACKAGE / "models").glob("*.py")), ("rnnapps.data", "rnnapps.pipelines", "rnnapps.cli")),
        ([PACKAGE / "text_ops.py"], ("rnnapps.data", "rnnapps.models", "rnnapps.pipelines")),
        (sorted((PACKAGE / "data").glob("*.py")), ("rnnapps.models", "rnnapps.pipelines", "rnnapps.cli")),
    ],
    ids=["models", "text_ops", "data"],
)
def test_imports_go_one_way(modules, forbidden):
    assert modules
    offenders = {
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in modules
        for name in _rnnapps_imports(path)
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
    }
    assert not offenders, sorted(offenders)


def test_the_import_check_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from rnnapps.data import conll\n    from rnnapps import pipelines\n")
    assert {"rnnapps.data", "rnnapps.pipelines"} <= _rnnapps_imports(sample)


_LOAD_WITH_MODELS_ALONE = """
import json, sys
import keras
import rnnapps.models
loaded = {}
for name, path in json.loads(sys.argv[1]).items():
    model = keras.saving.load_model(path)
    loaded[name] = [type(model).__name__, len(model.weights)]
leaked = sorted(m for m in sys.modules if m.startswith(("rnnapps.pipelines", "rnnapps.data", "rnnapps.runner")))
print(json.dumps({"loaded": loaded, "leaked": leaked}))
"""


def test_every_pipeline_model_keras_loads_with_rnnapps_models_alone(canonical_run):
    paths = {name: str(canonical_run(name).result.run_dir / "model.keras") for name in sorted(names())}
    completed = subprocess.run(
        [sys.executable, "-c", _LOAD_WITH_MODELS_ALONE, json.dumps(paths)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert sorted(report["loaded"]) == sorted(names())
    assert all(weights > 0 for _, weights in report["loaded"].values()), report
    assert report["leaked"] == [], report
