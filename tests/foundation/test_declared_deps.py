"""Everything the tests, benchmarks and the runtime they load import is installed by the README's
test command.

``scripts/test`` installs ``.[test]``; CI runs it in a fresh virtual environment. A test that
imports a package only the developer's machine happens to have would pass here and fail there:
this test names it first. Imports are read with ``ast`` and mapped to the distributions that
provide them in this environment; each must be declared (``install_requires`` or the ``test``
extra), or be a dependency of one that is.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
WRITTEN_BY_TESTS = {"mymodels", "glneed"}  # packages tests write into their tmp_path


def _declared() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += cfg["options.extras_require"]["test"].splitlines()
    return {canonicalize_name(Requirement(x).name) for x in lines if x.strip()}


def _closure(names: set[str]) -> set[str]:
    """The declared distributions and everything they depend on (unconditional requirements and
    those whose markers hold here), as installed."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in requires:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def _top_level_imports(folder: Path) -> dict[str, str]:
    """Top-level module names imported anywhere under ``folder``, each with one place it is."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                out.setdefault(n.split(".")[0], f"{path.relative_to(folder.parent)}:{node.lineno}")
    return out


def _local_modules() -> set[str]:
    """Modules of this repository (the packages, test helpers, models the tests write)."""
    names = {"ociforge", "ociforge_runtime", "ociforge_base_layers", "tests", "benchmarks"}
    names |= WRITTEN_BY_TESTS
    for folder in ("tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            names.add(path.stem)
        for path in (ROOT / folder).rglob("*"):
            if path.is_dir():
                names.add(path.name)
    return names


def test_every_import_of_the_tests_and_benchmarks_is_declared():
    provided = md.packages_distributions()
    installed = _closure(_declared())
    local = _local_modules()
    undeclared = []
    # the runtime too: the tests import it in process, with its optional gRPC parts
    for folder in ("tests", "benchmarks", "runtimes"):
        for module, where in sorted(_top_level_imports(ROOT / folder).items()):
            if module in sys.stdlib_module_names or module in local or module == "__future__":
                continue
            dists = {canonicalize_name(d) for d in provided.get(module, [])}
            if not dists & installed:
                undeclared.append(f"{module} ({where}; from {sorted(dists) or 'nothing here'})")
    assert undeclared == [], "add to the test extra in setup.cfg: " + ", ".join(undeclared)


def test_the_check_sees_an_undeclared_import(tmp_path):
    (tmp_path / "t.py").write_text("import yaml\nfrom os import path\n")
    found = _top_level_imports(tmp_path)
    assert set(found) == {"yaml", "os"}
    assert "pyyaml" not in _closure({"pytest"})
