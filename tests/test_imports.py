"""The import graph of vitzoo: data flows down, nothing imports in a circle, nothing hides a cycle.

A cycle hidden behind an import inside a function works until someone moves that import to the top of
the file (or imports the modules in another order); then it fails with "partially initialized module".
So vitzoo modules import other vitzoo modules at the top of the file only, and these tests check, from
the source (``ast``, nothing is imported), that:

- no function imports a vitzoo module (third-party imports inside functions are fine: optional or slow
  dependencies such as onnx / onnxruntime are imported where needed, each with a comment saying why);
- the graph of vitzoo imports, wherever they are written, has no cycle;

- the packages import downwards only, as the layer table below says (DESIGN.md, README "Layout");
- nothing but the package's own few modules sits loose at the top of ``src/vitzoo``;

and, by running the code, that every module imports on its own, as the first vitzoo module of a process.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vitzoo"

# (file relative to src/vitzoo, imported module): function-level vitzoo imports that are allowed, each
# with the reason. Keep it empty: a module that needs another one imports it at the top.
ALLOWED: dict[tuple[str, str], str] = {}

# The layers, lowest first: a package imports only packages of a lower layer (its own modules aside). Two
# packages in one layer do not import each other; what both need lives lower. The top-level ``vitzoo``
# package (the public API) and ``__main__`` stand above everything.
LAYERS: list[tuple[str, ...]] = [
    ("constants", "errors", "version"),  # values, the one user-facing exception, the version stamp
    ("config",),  # the typed run schema, its dialects and its command line
    ("checkpoint",),  # atomic files, the run state, run folders
    ("data", "models", "viz"),  # datasets and loaders; networks, registry, converters; pictures
    ("runtime",),  # how a model runs here: precision policy, CPU capability, packed / int8 kernels
    ("engine",),  # the Trainer, its loop, optimisers, schedules, losses, distributed helpers
    ("inference", "deploy", "bench"),  # evaluate / predict, export and ONNX Runtime, side-by-side timing
    ("tokenizers",),  # visual tokenizers (DALL-E dVAE, VQ-VAE) and their training task
    ("mim", "probe"),  # BEiT pre-training, linear probe and k-NN: tasks built on the engine
    ("cli",),  # one thin main per command
]
LAYER_OF = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
LOOSE_MODULES = {"__init__.py", "__main__.py", "constants.py", "errors.py", "version.py"}

# The entry point of `python -m vitzoo`: importing it runs the command line, by design.
NOT_IMPORTABLE_ALONE = {"vitzoo.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p): p for p in SOURCES}


def imported_modules(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """The vitzoo modules an import statement loads (``from pkg import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "vitzoo"]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing file's package
        package = module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != "vitzoo":
        return []
    return sorted({f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names})


def is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def vitzoo_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) for every vitzoo import that runs (not under TYPE_CHECKING)."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((m, child.lineno, in_function) for m in imported_modules(child, path))
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return found


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("path", SOURCES, ids=[relative(p) for p in SOURCES])
def test_no_function_level_vitzoo_imports(path):
    hidden = [f"{relative(path)}:{line}: {module}" for module, line, in_function in vitzoo_imports(path)
              if in_function and (relative(path), module) not in ALLOWED]
    assert not hidden, "import these at the top of the file (a function-level import hides a cycle):\n" + \
        "\n".join(hidden)


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (strongly connected components
    with more than one member, by Tarjan's algorithm), each sorted."""
    order: dict[str, int] = {}  # discovery index
    low: dict[str, int] = {}  # smallest index reachable from the node's subtree
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:  # node is the root of a component: pop it
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return sorted(groups)


def test_import_cycles_finds_each_group():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    graph = {"a": {"b"}, "b": {"c"}, "c": {"b"}, "d": {"e"}, "e": {"d", "a"}}
    assert import_cycles(graph) == [["b", "c"], ["d", "e"]]


def test_import_graph_has_no_cycle():
    """Every vitzoo import counts, top-level or not: a cycle through a function is still a cycle."""
    graph = {name: {m for m, _, _ in vitzoo_imports(path) if m != name} for name, path in MODULES.items()}
    cycles = import_cycles(graph)
    assert not cycles, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.timeout(400)  # above the subprocess's own limit (300 s), whose failure says more
def test_every_module_imports_on_its_own():
    """Each module imported first in a process with no vitzoo module loaded, so import order hides nothing.

    One interpreter for all (torch loads once): before each module, every vitzoo entry of
    ``sys.modules`` is dropped, so the module and everything it imports start from scratch.
    """
    names = sorted(set(MODULES) - NOT_IMPORTABLE_ALONE)
    script = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "vitzoo" or m.startswith("vitzoo.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException as e:
        failures[name] = traceback.format_exception_only(type(e), e)[-1].strip()
print(json.dumps(failures))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(names)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert failures == {}, "\n".join(f"{name}: {error}" for name, error in failures.items())


def package_of(module: str) -> str:
    """The top-level part of vitzoo a module belongs to: ``vitzoo.data.shards.read`` -> ``data``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vitzoo"


def test_every_package_has_a_layer():
    packages = {package_of(m) for m in MODULES} - {"vitzoo", "__main__"}
    assert packages <= set(LAYER_OF), f"place these in LAYERS: {sorted(packages - set(LAYER_OF))}"


def test_no_loose_modules_at_the_top():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in LOOSE_MODULES)
    assert not loose, f"modules loose in src/vitzoo (move each into the package of its layer): {loose}"


def test_imports_follow_the_layers():
    """A package imports only lower layers: data flows config -> data / models -> runtime -> engine -> ..."""
    upward = []
    for name, path in MODULES.items():
        here = package_of(name)
        if here not in LAYER_OF:  # vitzoo/__init__ (the public API) and __main__ sit on top
            continue
        for module, line, _ in vitzoo_imports(path):
            there = package_of(module)
            if there != here and LAYER_OF.get(there, len(LAYERS)) >= LAYER_OF[here]:
                upward.append(f"{relative(path)}:{line}: {here} (layer {LAYER_OF[here]}) imports {module} "
                              f"(layer {LAYER_OF.get(there, 'top')})")
    assert not upward, "imports against the layer table (move the shared code down a layer):\n" + \
        "\n".join(upward)


def test_commands_do_not_import_each_other():
    """What two commands share lives in a module that is no command's (inference/predict.py,
    inference/evaluate.py, probe/inputs.py, cli/training.py), so each command file reads on its own."""
    commands = {f"vitzoo.cli.{p.stem}" for p in (PACKAGE / "cli").glob("*.py")} - {
        "vitzoo.cli.__init__", "vitzoo.cli.helpfmt", "vitzoo.cli.training", "vitzoo.cli.launch"}
    crossed = [f"{relative(MODULES[c])}: imports {m}" for c in sorted(commands)
               for m, _, _ in vitzoo_imports(MODULES[c]) if m in commands and m != c]
    assert not crossed, "\n".join(crossed)
