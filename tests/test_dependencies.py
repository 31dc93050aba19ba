"""Every third-party package that vitzoo's source imports is declared in pyproject.toml.

An undeclared import works on the machine where it happened to be installed (``braceexpand`` came in
through webdataset) and breaks a user's install when the package that pulled it in changes. Checked from
the source with ``ast``: each imported top-level name is mapped to the distribution that provides it
(``importlib.metadata.packages_distributions``) and looked up among ``[project] dependencies`` and the
optional groups.
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vitzoo"


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: ``Pillow`` / ``pillow`` and ``onnx_script`` / ``onnx-script``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        requirements += group
    return {canonical(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def imported_top_level_names() -> dict[str, str]:
    """Top-level module name -> the first file importing it, for every absolute non-vitzoo import."""
    names: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top != "vitzoo" and top not in sys.stdlib_module_names:
                    names.setdefault(top, path.relative_to(ROOT).as_posix())
    return names


def test_every_imported_package_is_declared():
    providers = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    missing = []
    for name, where in sorted(imported_top_level_names().items()):
        distributions = {canonical(d) for d in providers.get(name, [name])}
        if not distributions & declared:
            missing.append(f"{name} (imported in {where}; provided by {', '.join(sorted(distributions))})")
    assert not missing, "declare these in pyproject.toml:\n" + "\n".join(missing)


def test_the_check_sees_an_undeclared_import():
    """The mapping is not vacuous: a package we know is imported maps to a declared distribution."""
    names = imported_top_level_names()
    assert {"torch", "timm", "yaml", "PIL"} <= set(names)
    assert canonical("PyYAML") in declared_distributions()
