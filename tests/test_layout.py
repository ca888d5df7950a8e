"""The package layout (docs/ARCHITECTURE.md): imports run one way, and the CLI starts without torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_layouts import make_kitti2015
from tools_helpers import SRC

PACKAGE = SRC / "madis_stereo"

# Layers from the bottom up. A module may import its own package and packages of lower layers, never a
# package of its own layer or above ("<top>" is madis_stereo/__init__.py and __main__.py).
LAYERS = (
    ("errors",),
    ("utils",),
    ("data", "geometry", "model"),
    ("evaluation", "inference"),
    ("training",),
    ("app",),
    ("<top>",),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the madis_stereo modules it imports anywhere in its body (lazy imports included)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}: relative import (the project uses absolute imports)")
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "madis_stereo":
                for alias in node.names:  # ``from package import module`` imports the module
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "madis_stereo")
        unknown = targets - set(modules)
        assert not unknown, f"{name} imports modules that do not exist: {sorted(unknown)}"
        graph[name] = targets - {name}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__main__" else "<top>"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_package_has_a_layer():
    packages = {_package(m) for m in _modules()}
    missing = packages ^ set(LAYER_OF)
    assert not missing, f"add new packages to LAYERS (and docs/ARCHITECTURE.md): {sorted(missing)}"


def test_imports_point_down_the_layers():
    wrong = [f"{src} -> {dst}" for src, targets in import_graph().items() for dst in sorted(targets)
             if _package(src) != _package(dst) and LAYER_OF[_package(dst)] >= LAYER_OF[_package(src)]]
    assert not wrong, "imports that point sideways or up the layers:\n" + "\n".join(wrong)


def test_no_import_cycle():
    assert _cycle(import_graph()) is None, f"import cycle: {' -> '.join(_cycle(import_graph()))}"


def test_the_checks_catch_a_wrong_arrow_and_a_cycle():
    graph = {"madis_stereo.data.a": {"madis_stereo.model.b"}, "madis_stereo.model.b": {"madis_stereo.data.a"}}
    assert _cycle(graph) == ["madis_stereo.data.a", "madis_stereo.model.b", "madis_stereo.data.a"]
    assert LAYER_OF[_package("madis_stereo.model.b")] >= LAYER_OF[_package("madis_stereo.data.a")]
    assert _cycle({"madis_stereo.utils.a": set(), "madis_stereo.errors": set()}) is None


def _modules_after(code: str, *argv: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code`` (which may call main(argv))."""
    script = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)), file=sys.stderr)"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stderr.split())


RUN_MAIN = "from madis_stereo.app.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize("argv", [["--help"], ["data", "check", "--help"], ["predict", "--help"]])
def test_cli_help_does_not_import_torch(argv):
    loaded = _modules_after(RUN_MAIN, *argv)
    assert "madis_stereo.app.cli" in loaded and "torch" not in loaded


def test_data_check_does_not_import_torch(tmp_path):
    layout = make_kitti2015(tmp_path / "kitti")
    loaded = _modules_after(RUN_MAIN, "data", "check", "--dataset", "kitti2015", "--root", str(layout.root),
                            "--verify", "--samples", "2", "--out", str(tmp_path / "sheet.png"))
    assert (tmp_path / "sheet.png").is_file() and "madis_stereo.data.benchmarks" in loaded
    assert "torch" not in loaded


def test_package_import_is_lazy_and_complete():
    loaded = _modules_after("import madis_stereo as ms\nassert ms.__version__ and ms.ConfigError")
    assert "torch" not in loaded
    import madis_stereo as ms

    for name in ms.__all__:
        assert getattr(ms, name) is not None, name
    errors = [getattr(ms, n) for n in ms.__all__ if n.endswith("Error")]
    assert all(issubclass(e, ms.MadisStereoError) for e in errors) and len(errors) == 7
    assert issubclass(ms.ConfigError, ValueError) and issubclass(ms.TrainingError, RuntimeError)
    assert not hasattr(ms, "random_masks")
