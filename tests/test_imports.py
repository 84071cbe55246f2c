"""The shape of the package: no import circle, and the light modules stay light.

A circle (pipeline imported workers, which imported pipeline back inside a function) makes
a reader hold both modules in mind at once, and a lazy import that dodges one hides it.
Asking whether a name is a photo, or watching a folder, must not load the models.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import postselectd

PACKAGE = Path(postselectd.__file__).parent


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports anywhere in its
    code (at the top, inside a function, under TYPE_CHECKING). A submodule's own parent
    packages are left out: they are loaded before it whatever it imports."""
    files = {_module_name(f, package): f for f in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package_of = name if path.name == "__init__.py" else name.rpartition(".")[0]
        named: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package_of.split(".")[: len(package_of.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                named.add(base)
                named.update(f"{base}.{alias.name}" for alias in node.names)
        parents = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        graph[name] = set()
        for target in named:
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and target not in parents:
                graph[name].add(target)
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import one another, directly or round about."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return circles


def test_no_module_of_postselectd_imports_itself_round_about():
    assert import_circles(import_graph()) == []


def test_the_circle_finder_finds_a_lazy_circle(tmp_path: Path):
    package = tmp_path / "postselectd"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from postselectd.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from postselectd import a\n")
    assert import_circles(import_graph(package)) == [["postselectd.a", "postselectd.b"]]


def test_the_worker_pool_imports_no_stage():
    assert import_graph()["postselectd.workers"] == set()


def _loaded(module: str, names: tuple[str, ...]) -> list[str]:
    code = f"import sys, {module}; print(' '.join(n for n in {names!r} if n in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_photo_rules_load_no_decoder_model_sidecar_library_or_watchdog():
    assert _loaded("postselectd.photos", ("onnxruntime", "rawpy", "pyexiv2", "watchdog")) == []


def test_watching_a_folder_or_reading_a_report_loads_no_model():
    assert _loaded("postselectd.watcher", ("onnxruntime",)) == []
    assert _loaded("postselectd.report", ("onnxruntime",)) == []
