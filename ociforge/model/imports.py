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
    _user, third = classify(referenced_modules(pickled))
    return sorted(m for m in referenced_modules(pickled) if m.split(".", 1)[0] in third)


def _stdlib_paths() -> list[Path]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    return [Path(p).resolve() for p in paths]


def _site_paths() -> list[Path]:
    paths = set(site.getsitepackages()) | {site.getusersitepackages()}
    paths |= {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    return [Path(p).resolve() for p in paths if p]


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
    stdlib, sites = _stdlib_paths(), _site_paths()
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
        if _is_under(path, stdlib) and not _is_under(path, sites):
            continue
        if _is_under(path, sites):
            third.add(top)
            continue
        root = path.parent if path.name == "__init__.py" else path
        user[top] = UserCode(top, root)
    return sorted(user.values(), key=lambda u: u.name), third


def distributions_for(top_names: Iterable[str]) -> dict[str, str]:
    """Installed distributions (name → exact version) providing these top-level import names."""
    mapping = md.packages_distributions()
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
