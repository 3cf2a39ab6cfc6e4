"""The packages import one way only: each layer may import the layers listed before it, never one after it or
a sibling of its own layer. Every import counts, function-local ones included (they hid a cycle before)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src" / "reidkit"

# Bottom to top. A module may import its own package and any package of an earlier layer.
LAYERS = [
    ["errors"],
    ["outputs", "devices", "distances", "distributed"],
    ["models", "losses", "metrics"],
    ["config"],  # validates backbone names against reidkit.models
    ["data"],
    ["retrieval", "viz"],
    ["engine"],
    ["export"],
    ["serve"],
    ["cli", "__init__"],
    ["__main__"],
]
LAYER = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """"reidkit.engine.trainer" → "engine"; "reidkit.errors" → "errors"; "reidkit" → "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported reidkit module) of every import statement in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "reidkit":  # from reidkit import distributed
                found += [(node.lineno, f"reidkit.{alias.name}") for alias in node.names]
            elif node.module.startswith("reidkit."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("reidkit.")]
    return found


def upward_imports(root: Path) -> list[str]:
    """'file:line imports module (layer a → layer b)' for every import that does not point down or sideways
    within its own package."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(("reidkit", *path.relative_to(root).with_suffix("").parts))
        source = package_of(module)
        if source not in LAYER:
            problems.append(f"{path.relative_to(root)}: package {source!r} has no layer in LAYERS")
            continue
        for line, imported in imports_of(path):
            target = package_of(imported)
            if target == source:
                continue
            if target not in LAYER or LAYER[target] >= LAYER[source]:
                problems.append(f"{path.relative_to(root)}:{line} imports {imported} "
                                f"(layer {LAYER[source]} {source} → layer {LAYER.get(target, '?')} {target})")
    return problems


def test_every_import_points_down_the_layers():
    assert upward_imports(SOURCE) == []


def test_the_check_finds_an_upward_and_a_sideways_import(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "rank.py").write_text("def f():\n    from reidkit.engine.trainer import train\n")
    (tmp_path / "viz").mkdir()
    (tmp_path / "viz" / "report.py").write_text("from reidkit.retrieval import GalleryIndex\n"
                                               "from reidkit.metrics.rank import evaluate_rank\n")
    (tmp_path / "losses").mkdir()
    (tmp_path / "losses" / "metric.py").write_text("from reidkit import distances, engine\n")
    assert upward_imports(tmp_path) == [
        "losses/metric.py:1 imports reidkit.engine (layer 2 losses → layer 6 engine)",
        "metrics/rank.py:2 imports reidkit.engine.trainer (layer 2 metrics → layer 6 engine)",
        "viz/report.py:1 imports reidkit.retrieval (layer 5 viz → layer 5 retrieval)",
    ]


@pytest.mark.parametrize("module, package", [("reidkit.engine.trainer", "engine"), ("reidkit.errors", "errors"),
                                             ("reidkit", "__init__")])
def test_package_of(module, package):
    assert package_of(module) == package
