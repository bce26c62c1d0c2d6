"""The layering, read from the source (AST): core is a pure library, pipelines are independent."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sparsetrain"
FORBIDDEN_IN_CORE = ("sparsetrain.config", "kedro", "mlflow", "optuna")


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved."""
    package = ".".join(("sparsetrain", *path.relative_to(PACKAGE).parent.parts))
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_imports_neither_config_nor_kedro_mlflow_optuna(path):
    bad = sorted(n for n in imported_modules(path) if any(_under(n, f) for f in FORBIDDEN_IN_CORE))
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


PIPELINES = sorted(p.name for p in (PACKAGE / "pipelines").iterdir() if (p / "__init__.py").exists())


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_no_pipeline_imports_another(pipeline):
    for path in (PACKAGE / "pipelines" / pipeline).rglob("*.py"):
        others = {
            n for n in imported_modules(path)
            for other in PIPELINES
            if other != pipeline and _under(n, f"sparsetrain.pipelines.{other}")
        }
        assert not others, f"{path.relative_to(PACKAGE)} imports {sorted(others)}"


def test_the_walker_sees_relative_and_absolute_imports(tmp_path):
    """The check above cannot pass vacuously: it finds both forms in a real module."""
    names = imported_modules(PACKAGE / "pipelines" / "training" / "pipeline.py")
    assert "sparsetrain.pipelines.training.nodes" in names and "kedro.pipeline" in names
