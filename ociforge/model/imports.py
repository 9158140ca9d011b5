"""What a model needs besides its pickle: the user's own modules, and ``requirements="auto"``.

cloudpickle pickles functions and classes of ``__main__`` (a script, a notebook) by value, but
anything importable by reference: the user's own project modules must therefore travel as source
in a layer of their own, and third-party packages must be installed as wheels. Both are found
from the pickle itself: every module it references by name is a module the image must import.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import pickletools
import re
import site
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInput

_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "UNICODE",
    "BINUNICODE8",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}
# Modules the runtime image provides itself: never user code, never an extra requirement.
_PROVIDED = {"ociforge_runtime", "ociforge", "cloudpickle", "__main__", "__mp_main__"}
_SUBIMPORT = object()  # what the memo holds for cloudpickle's subimport function


def referenced_modules(pickled: bytes) -> set[str]:
    """Module names a pickle imports when loaded (GLOBAL/STACK_GLOBAL and cloudpickle's subimport)."""
    modules: set[str] = set()
    memo: dict[int, object] = {}
    strings: list[object] = []
    last: object = None
    after_subimport = False
    for op, arg, _pos in pickletools.genops(pickled):
        name = op.name
        if name in _STRING_OPS:
            last = arg
            strings.append(arg)
            if after_subimport and isinstance(arg, str):
                modules.add(arg)
                after_subimport = False
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = last
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = last
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            # a later subimport reuses the memoized function, and its module name is often a
            # string memoized before (from the code's names): both come back by GET
            last = memo.get(int(arg))
            strings.append(last)
            if after_subimport and isinstance(last, str):
                modules.add(last)
                after_subimport = False
            elif last is _SUBIMPORT:
                after_subimport = True
            continue
        if name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            modules.add(module)
            after_subimport = attr in ("subimport", "dynamic_subimport")
            last = _SUBIMPORT if after_subimport else None
            continue
        if name == "STACK_GLOBAL" and len(strings) >= 2:
            module, attr = strings[-2], strings[-1]
            if isinstance(module, str):
                modules.add(module)
            after_subimport = attr in ("subimport", "dynamic_subimport")
            last = _SUBIMPORT if after_subimport else None
            continue
        last = None
    return modules


def preimportable(pickled: bytes) -> list[str]:
    """Third-party modules the pickle imports (sorted), for the runtime to import before forking."""
    modules = referenced_modules(pickled)
    _user, third = classify(modules)
    return sorted(m for m in modules if m.split(".", 1)[0] in third)


def _roots() -> tuple[list[Path], list[Path]]:
    """The standard library's folders and the site-packages folders, resolved."""
    scheme = sysconfig.get_paths()  # each call expands the whole scheme again: once
    stdlib = {scheme[k] for k in ("stdlib", "platstdlib")}
    sites = set(site.getsitepackages()) | {site.getusersitepackages()}
    sites |= {scheme[k] for k in ("purelib", "platlib")}
    return [Path(p).resolve() for p in stdlib], [Path(p).resolve() for p in sites if p]


def _is_under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


@dataclass(frozen=True)
class UserCode:
    """A top-level module or package of the user's project, carried as source."""

    name: str
    path: Path  # a package directory or a single .py file

    @property
    def is_package(self) -> bool:
        return self.path.is_dir()


def classify(modules: Iterable[str]) -> tuple[list[UserCode], set[str]]:
    """Split module names into the user's own code (found on disk outside site-packages and the
    standard library) and third-party top-level names (installed distributions)."""
    user: dict[str, UserCode] = {}
    third: set[str] = set()
    roots: tuple[list[Path], list[Path]] | None = None
    for full in modules:
        top = full.split(".", 1)[0]
        if (
            not top
            or top in _PROVIDED
            or top in sys.builtin_module_names
            or top in sys.stdlib_module_names
        ):
            continue
        mod = sys.modules.get(top)
        origin = getattr(mod, "__file__", None) if mod is not None else None
        if origin is None:
            third.add(top)
            continue
        path = Path(origin).resolve()
        if roots is None:  # only once a module has a file to place
            roots = _roots()
        stdlib, sites = roots
        if _is_under(path, stdlib) and not _is_under(path, sites):
            continue
        if _is_under(path, sites):
            third.add(top)
            continue
        root = path.parent if path.name == "__init__.py" else path
        user[top] = UserCode(top, root)
    return sorted(user.values(), key=lambda u: u.name), third


def providers(top_names: Iterable[str]) -> dict[str, list[str]]:
    """``importlib.metadata.packages_distributions()`` for these top-level names only: the same
    lists (distribution names in ``distributions()`` order) for the names it maps.

    packages_distributions() reads every installed distribution's metadata and, for each one
    without ``top_level.txt``, turns every line of its ``RECORD`` into a path object: 0.1-0.3 s
    on every build here (84 distributions, 36 without top_level.txt; this takes 0.02 s). A
    distribution can only provide a name that its ``top_level.txt`` lists or, without one, that
    begins a line of its file list, so only those are looked at further (:func:`_inferred`).
    Nothing is cached: a distribution installed a moment ago is found.
    """
    tops = set(top_names)
    declared = getattr(md, "_top_level_declared", None)
    inferred = getattr(md, "_top_level_inferred", None)
    if declared is None or inferred is None:  # an importlib.metadata without them: the slow way
        mapping = md.packages_distributions()
        return {t: mapping[t] for t in sorted(tops) if t in mapping}
    if not tops:
        return {}
    starts = {t: _line_start(t) for t in tops}
    found: dict[str, list[str]] = {}
    for dist in md.distributions():
        names = declared(dist) or _inferred(dist, tops, starts, inferred)
        hits = [n for n in names if n in tops]
        if hits:
            dist_name = dist.metadata["Name"]
            for n in hits:
                found.setdefault(n, []).append(dist_name)
    return found


def _line_start(top: str) -> re.Pattern[str]:
    """A line of a ``RECORD`` whose first path part, or file name, can be ``top`` (``T/...``,
    ``T.py``, ``T.cpython-311-x86_64-linux-gnu.so``, ``T``; CSV-quoted or under ``./``): a
    superset of the lines any Python's inference takes a top-level name from."""
    return re.compile(rf'^"?(?:\./)*{re.escape(top)}(?:[/.,"\r]|$)', re.MULTILINE)


def _inferred(
    dist: md.Distribution,
    tops: set[str],
    starts: dict[str, re.Pattern[str]],
    inferred,
) -> Iterable[str]:
    """The names of ``tops`` that the standard library's ``_top_level_inferred(dist)`` holds,
    for a distribution without ``top_level.txt`` (or more of that function's names).

    Its ``RECORD`` (what ``files`` reads when there is one) must have a line that starts with
    the name, or the name is not there. A line ``T/__init__.py`` of a file that exists makes
    ``T`` one in every Python's inference (3.11: a ``.py`` file's first folder; 3.12+: any
    file's first folder; 3.13+: of the files that exist), so a package's own distribution is
    answered without its whole file list. Anything else (a namespace package, a module file,
    an egg's legacy lists, relative to other folders) takes the inference itself.
    """
    record = dist.read_text("RECORD")
    if not record:
        legacy = [dist.read_text(n) or "" for n in ("installed-files.txt", "SOURCES.txt")]
        return inferred(dist) if any(t in text for text in legacy for t in tops) else ()
    candidates = [t for t in tops if t in record and starts[t].search(record)]
    if not candidates:
        return ()
    proven = [
        t
        for t in candidates
        if (record.startswith(f"{t}/__init__.py,") or f"\n{t}/__init__.py," in record)
        and Path(dist.locate_file(f"{t}/__init__.py")).is_file()
    ]
    return proven if len(proven) == len(candidates) else inferred(dist)


def distributions_for(top_names: Iterable[str]) -> dict[str, str]:
    """Installed distributions (name → exact version) providing these top-level import names."""
    mapping = providers(top_names)
    out: dict[str, str] = {}
    missing = []
    for top in sorted(set(top_names)):
        dists = mapping.get(top)
        if not dists:
            missing.append(top)
            continue
        for dist in dists:
            out[dist] = md.version(dist)
    if missing:
        raise InvalidInput(
            f"requirements='auto': cannot tell which installed distribution provides "
            f"{', '.join(missing)}; list the requirements explicitly"
        )
    return out


def source_imports(code: Iterable[UserCode]) -> set[str]:
    """Top-level names imported by the user's own modules (absolute imports only)."""
    names: set[str] = set()
    for uc in code:
        files = sorted(uc.path.rglob("*.py")) if uc.is_package else [uc.path]
        for f in files:
            try:
                tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
            except (OSError, SyntaxError, UnicodeDecodeError) as e:
                raise InvalidInput(f"cannot read the model's module {f}: {e}") from None
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".", 1)[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".", 1)[0])
    return names


def auto_requirements(pickled: bytes) -> tuple[list[str], list[UserCode]]:
    """``requirements="auto"``: exact pins for what the pickle and the user's modules import."""
    user, third = classify(referenced_modules(pickled))
    own = {u.name for u in user}
    _u2, more = classify(n for n in source_imports(user) if n not in own)
    dists = distributions_for((third | more) - own)
    return [
        f"{name}=={version}"
        for name, version in sorted(dists.items(), key=lambda kv: kv[0].lower())
    ], user
