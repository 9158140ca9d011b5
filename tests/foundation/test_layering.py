"""The package's plan holds: no import cycles, lower parts never import higher ones, and the
runtime that ships inside images imports nothing of the builder.

Imports are read from the source with ``ast`` (function-local ones too), so the test needs nothing
to be importable and catches a cycle that a lazy import would hide until run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each part, from the floor up: a module may import its own part and any part below it.
RANKS = {
    "ociforge.errors": 0,
    "ociforge.cachedir": 0,
    "ociforge.fsutil": 0,
    "ociforge.version": 0,
    "ociforge.oci": 1,
    "ociforge.python": 2,
    "ociforge.transports": 2,
    "ociforge.bases": 3,
    "ociforge.cache": 3,  # the registry cache of layer memo entries: oci and transports; builder's
    "ociforge.model": 3,
    "ociforge.examples": 3,
    "ociforge.supply": 3,  # SBOMs, referrers, cosign signatures: used by builder and airgap
    "ociforge.deploy": 3,  # Kubernetes/KServe/Seldon manifests of an image: used by builder, cli
    "ociforge.run": 3,  # an image's tree unpacked and run under bubblewrap: used by builder, cli
    "ociforge.builder": 4,
    "ociforge.artifacts": 4,  # weights as artifacts: oci, transports and bases, beside the builder
    "ociforge.airgap": 5,
    "ociforge.cli": 6,
    "ociforge.__main__": 6,
    "ociforge": 7,  # the public API, above everything it re-exports
}


def _modules(package_dir: Path, package: str) -> dict[str, Path]:
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports anywhere in its source: a submodule named
    in ``from P import m``, else the package ``P`` itself (its ``__init__`` gives the name)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                if f"{module}.{a.name}" in known:
                    out.add(f"{module}.{a.name}")
                elif module in known:
                    out.add(module)
    out.discard(name)
    return out


def _graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    mods = _modules(package_dir, package)
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _rank(module: str) -> int:
    best = max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len)
    return RANKS[best]


def test_no_import_cycles():
    assert _cycles(_graph(ROOT / "ociforge", "ociforge")) == []


def test_cycle_finder_sees_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a  # hidden in a function\n")
    assert _cycles(_graph(pkg, "pkg")) == [["pkg.a", "pkg.sub.b"]]


def test_every_module_has_a_part():
    for module in _modules(ROOT / "ociforge", "ociforge"):
        assert any(module == p or module.startswith(p + ".") for p in RANKS), module


def test_lower_parts_never_import_higher_ones():
    graph = _graph(ROOT / "ociforge", "ociforge")
    upward = sorted(
        f"{m} (rank {_rank(m)}) imports {d} (rank {_rank(d)})"
        for m, deps in graph.items()
        for d in deps
        if _rank(d) > _rank(m)
    )
    assert upward == []


@pytest.mark.parametrize("package", ["ociforge_runtime"])
def test_runtime_imports_nothing_of_the_builder(package):
    for path in sorted((ROOT / "runtimes" / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] != "ociforge", f"{path.name} imports {n}"
