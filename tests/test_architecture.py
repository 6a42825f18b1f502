"""The code matches docs/architecture.md: imports go one way, every module has a layer, modules stay small."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "so3krates"
DOC = ROOT / "docs" / "architecture.md"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# The model's equations may be longer than a function elsewhere: one paper equation stays one function.
EQUATION_PACKAGES = ("so3krates.model",)


def layers() -> tuple[dict[str, str], dict[str, set[str]]]:
    """(module prefix → layer, layer → layers it may import) from the table in docs/architecture.md."""
    prefixes: dict[str, str] = {}
    allowed: dict[str, set[str]] = {}
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and line.count("|") == 4]
    for row in rows:
        layer, modules, may_import = (cell.strip() for cell in row.strip("|").split("|"))
        if layer == "layer" or not re.findall(r"`(so3krates[\w.]*)`", modules):
            continue
        for prefix in re.findall(r"`(so3krates[\w.]*)`", modules):
            prefixes[prefix] = layer
        allowed[layer] = {layer, *(name.strip() for name in may_import.split(",") if name.strip())}
    return prefixes, allowed


def layer_of(module: str, prefixes: dict[str, str]) -> str | None:
    """The layer of a dotted module name: its longest listed prefix (the package itself only exactly)."""
    best = None
    for prefix in prefixes:
        if module == prefix or (prefix != "so3krates" and module.startswith(prefix + ".")):
            if best is None or len(prefix) > len(best):
                best = prefix
    return None if best is None else prefixes[best]


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The so3krates modules ``name`` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "so3krates")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "so3krates":
                continue
            for alias in node.names:  # "from so3krates import run_dir" imports the module so3krates.run_dir
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return out


def test_every_module_has_a_layer():
    prefixes, _ = layers()
    assert prefixes, "no layer table found in docs/architecture.md"
    missing = [name for name in modules() if layer_of(name, prefixes) is None]
    assert not missing, f"modules without a row in docs/architecture.md: {missing}"


def test_imports_go_one_way():
    prefixes, allowed = layers()
    known = modules()
    back = []
    for name, path in known.items():
        source = layer_of(name, prefixes)
        for target in sorted(imported(name, path, known)):
            layer = layer_of(target, prefixes)
            if layer is not None and layer not in allowed[source]:
                back.append(f"{name} ({source}) imports {target} ({layer})")
    assert not back, "imports against docs/architecture.md:\n" + "\n".join(back)


def test_the_checker_sees_a_back_arrow(tmp_path):
    # The same parsing on a module of the lowest layer that imports the training package.
    prefixes, allowed = layers()
    probe = tmp_path / "so3.py"
    probe.write_text("def f():\n    from so3krates.train import loop\n    from . import potential\n")
    targets = imported("so3krates.so3", probe, {"so3krates.train.loop": probe, "so3krates.potential": probe})
    assert targets == {"so3krates.train.loop", "so3krates.potential"}
    assert {layer_of(t, prefixes) for t in targets} - allowed["base"] == {"train", "potential"}


def test_modules_are_small():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_short():
    long = []
    for name, path in modules().items():
        if name.startswith(EQUATION_PACKAGES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n}")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("old", ["so3krates.md.model", "so3krates.md.neighbours", "so3krates.cpu_memory"])
def test_deprecated_modules_only_forward(old):
    # A deprecated alias module holds no logic of its own: a docstring, imports and one __getattr__.
    tree = ast.parse(modules()[old].read_text())
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Import", "Assign"}
