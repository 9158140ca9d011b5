"""The bytecode layer: .pyc files for the modules an image imports when it starts, compiled in
worker processes.

    startup_bytecode(files, search_path, roots, pool) -> {image path of .pyc: bytes}
    bytecode_layer(files, search_path, roots, store, compression, key=...) -> Layer | None

Why not every module, as ``pip install`` does: compiling is most of a cold build's CPU time
(about 3 ms a file; scikit-learn's set has 3,300 .py files, 950 of them in ``tests/``), and
most of those modules are never imported by a model server. Why not none: the server runs as
a user who cannot write ``__pycache__``, so every start would compile again in memory what it
imports (numpy, scipy, sklearn, flask, gunicorn: about 900 modules, 3 s here).

So ociforge compiles the modules reachable from the server's start: the runtime's modules,
the user's code, the modules the model's pickle names (``build.imports``) and what the runtime
loads by name (``STARTUP_IMPORTS``), then, transitively, every module those import at load
time: module level, ``try``/``if`` blocks and class bodies, a module's ``__getattr__`` (lazy
submodules), not other function bodies nor ``if TYPE_CHECKING:`` blocks (read from the compiled
bytecode, so it costs next to nothing). The set is a function of the image's files and
these roots, never of the builder's process, so the layer is reproducible. A module outside it
(imported lazily, by a string, or by a C extension) still works: Python compiles it in memory
when it is first imported.

Compiling runs in ``python -I -S`` worker processes (one per CPU; :mod:`ociforge.python._pycworker`):
``compile()`` holds the GIL, and the bytes are the same in any process (marshal format 2).
While the build waits on the network to resolve, :func:`prewarm` compiles the same closure from
this Python's installed copies of the packages; results are remembered by the source's sha256,
so the wheels' identical files are not compiled again (measured: 919 of 955 modules of the
example), and those that differ are compiled from the wheel. An installed module whose own
``__pycache__`` .pyc Python would load is not even compiled: that code object, renamed to the
image path and marshalled in format 2, is byte for byte the compiler's output
(:func:`ociforge.python._pycworker.from_cache`; about 7 times cheaper). The example's head start went
from 2.4 s of both cores to 1 s of one.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import posixpath
import queue
import site
import struct
import subprocess
import sys
import sysconfig
import threading
import zipfile
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..oci.layer import Entry, Layer, image_path, write_layer
from ..oci.layercache import memoized
from . import _pycworker

Source = Callable[[], bytes]  # reads one .py file's bytes when it is needed

_WORKER = Path(_pycworker.__file__)


class CompilePool:
    """Compiles modules in worker processes; results are remembered for the pool's life (one
    build: the amd64 and arm64 wheels mostly hold the same .py files, so the second platform
    compiles nothing). Falls back to compiling in this process when a worker cannot be
    started."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="ociforge-pyc")
        self._idle: list[subprocess.Popen] = []
        self._all: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._broken = not sys.executable
        self._done: dict[tuple[bytes, str], tuple[bytes | None, list]] = {}
        self._optional_off = threading.Event()

    def __enter__(self) -> CompilePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(
        self, filename: str, source: bytes, optional: bool = False, path: str | None = None
    ) -> Future:
        """A future of ``(pyc or None, imports)`` for ``source`` compiled as ``filename``.
        ``optional`` work (see :func:`prewarm`) is skipped once :meth:`stop_optional` is called.
        ``path`` is where this Python has the source installed: its own ``__pycache__`` .pyc is
        used when Python would load it (:func:`ociforge.python._pycworker.from_cache`)."""
        return self._threads.submit(self.compile, filename, source, optional, path)

    def stop_optional(self) -> None:
        self._optional_off.set()

    def optional_stopped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`stop_optional`; whether it came."""
        return self._optional_off.wait(timeout)

    def compile(
        self, filename: str, source: bytes, optional: bool = False, path: str | None = None
    ) -> tuple[bytes | None, list]:
        key = (hashlib.sha256(source).digest(), filename)
        with self._lock:
            hit = self._done.get(key)
        if hit is not None:
            return hit
        if optional and self._optional_off.is_set():
            return None, []  # not remembered: it was not compiled
        result = (path and _pycworker.from_cache(source, filename, path)) or self._in_worker(
            filename, source
        )
        with self._lock:
            self._done[key] = result
        return result

    def _in_worker(self, filename: str, source: bytes) -> tuple[bytes | None, list]:
        proc = None if self._broken else self._take()
        if proc is None:
            return _pycworker.compile_module(source, filename)

        try:
            req = pickle.dumps((filename, source), protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.write(struct.pack(">I", len(req)) + req)
            proc.stdin.flush()
            (n,) = struct.unpack(">I", _pycworker.read_exact(proc.stdout, 4))
            result = pickle.loads(_pycworker.read_exact(proc.stdout, n))
        except (OSError, EOFError, struct.error, pickle.UnpicklingError):
            # sys.executable is not a Python that runs the worker (an embedding host): compile
            # here from now on rather than start another process for every module
            proc.kill()
            self._broken = True
            return _pycworker.compile_module(source, filename)
        with self._lock:
            self._idle.append(proc)
        return result

    def _take(self) -> subprocess.Popen | None:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            self._broken = True
            return None
        with self._lock:
            self._all.append(proc)
        return proc

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        for proc in self._all:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        self._all.clear()
        self._idle.clear()
        self._done.clear()


def compile_all(items: Iterable[tuple[str, bytes]], pool: CompilePool | None = None):
    """``(filename, pyc or None)`` for each ``(filename, source)``, in order, compiled in
    parallel."""
    own = pool is None
    pool = pool or CompilePool()
    try:
        futures = [(name, pool.submit(name, src)) for name, src in items]
        for name, fut in futures:
            yield name, fut.result()[0]
    finally:
        if own:
            pool.close()


def pyc_path(py: str) -> str:
    """Where Python looks for the bytecode of ``py`` (PEP 3147), for this interpreter."""
    head, tail = posixpath.split(py)
    return posixpath.join(head, "__pycache__", f"{tail[:-3]}.{sys.implementation.cache_tag}.pyc")


class _Finder:
    """Module name → the image path of its source, over a search path, as Python's path finder
    does for source files: a package directory with ``__init__.py`` first, then ``name.py``."""

    def __init__(self, files: Mapping[str, Source], search_path: list[str]) -> None:
        self.files = files
        self.search_path = [p.strip("/") for p in search_path]

    def find(self, name: str) -> tuple[str, bool] | None:
        rel = name.replace(".", "/")
        for d in self.search_path:
            base = f"{d}/{rel}" if d else rel
            if f"{base}/__init__.py" in self.files:
                return f"{base}/__init__.py", True
            if f"{base}.py" in self.files:
                return f"{base}.py", False
        return None


def _candidates(module: str, is_package: bool, record: tuple) -> list[str]:
    """The module names one import statement may load (parents first)."""
    level, name, names = record
    if level:
        package = module if is_package else module.rpartition(".")[0]
        parts = package.split(".") if package else []
        if level - 1 >= len(parts):  # beyond the top-level package: an ImportError
            return []
        base = ".".join(parts[: len(parts) - (level - 1)] + ([name] if name else []))
    else:
        base = name
    if not base:
        return []
    bits = base.split(".")
    out = [".".join(bits[: i + 1]) for i in range(len(bits))]
    out += [f"{base}.{n}" for n in names]
    return out


@dataclass
class Trace:
    """What a closure read: the module names it looked up (found or not) and the image paths
    of the sources it found. The closure is a function of the files at the paths those
    lookups check and of nothing else (see
    :func:`ociforge.builder.layers.startup_bytecode_layer`)."""

    looked: set[str] = field(default_factory=set)
    found: set[str] = field(default_factory=set)


def startup_bytecode(
    files: Mapping[str, Source],
    search_path: list[str],
    roots: Iterable[str],
    pool: CompilePool,
    optional: bool = False,
    trace: Trace | None = None,
) -> dict[str, bytes]:
    """The .pyc (by image path) of every module reachable from ``roots`` through the imports
    that run at load time. ``files`` maps image paths of .py files to readers of their bytes.
    ``trace`` is told what the closure looked up and found."""
    finder = _Finder(files, search_path)
    seen: set[str] = trace.looked if trace is not None else set()
    found_paths: set[str] = trace.found if trace is not None else set()
    done: queue.SimpleQueue = queue.SimpleQueue()  # futures as they finish: O(1), unlike wait()
    pending = 0
    out: dict[str, bytes] = {}

    def visit(names: Iterable[str]) -> None:
        nonlocal pending
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            found = finder.find(name)
            if found is None:
                continue
            path, is_package = found
            found_paths.add(path)
            read = files[path]
            fut = pool.submit("/" + path, read(), optional, getattr(read, "host_path", None))
            fut.add_done_callback(lambda f, m=(name, path, is_package): done.put((f, m)))
            pending += 1

    # importing a.b.c imports a and a.b first
    visit(sorted({".".join(r.split(".")[: i + 1]) for r in roots for i in range(r.count(".") + 1)}))
    while pending:
        fut, (name, path, is_package) = done.get()
        pending -= 1
        pyc, imports = fut.result()
        if pyc is None:
            continue
        out[pyc_path(path)] = pyc
        for record in imports:
            visit(_candidates(name, is_package, tuple(record)))
    return dict(sorted(out.items()))


class HostTree(Mapping):
    """The .py files this Python has installed (its site-packages), seen at the image path
    ``prefix`` (the target's site-packages): what :func:`prewarm` compiles from."""

    def __init__(self, prefix: str, dirs: Iterable[str]) -> None:
        self.prefix = prefix.strip("/") + "/"
        self.dirs = [d for d in dict.fromkeys(dirs) if d and os.path.isdir(d)]

    def _host(self, path: str) -> str | None:
        if not path.startswith(self.prefix):
            return None
        rel = path[len(self.prefix) :]
        for d in self.dirs:
            full = os.path.join(d, rel)
            if os.path.isfile(full):
                return full
        return None

    def __contains__(self, path) -> bool:
        return isinstance(path, str) and self._host(path) is not None

    def __getitem__(self, path: str) -> Source:
        full = self._host(path)
        if full is None:
            raise KeyError(path)
        return _HostSource(full)

    def __iter__(self):
        return iter(())  # only looked up, never listed

    def __len__(self) -> int:
        return 0


class _HostSource:
    """Reads an installed .py file; ``host_path`` lets the pool take Python's own .pyc of it."""

    def __init__(self, host_path: str) -> None:
        self.host_path = host_path

    def __call__(self) -> bytes:
        return Path(self.host_path).read_bytes()


def host_site_dirs() -> list[str]:
    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    return dirs + [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]


def prewarm(
    own: Mapping[str, Source],
    search_path: list[str],
    site_packages: str,
    roots: Iterable[str],
    pool: CompilePool,
    delay: float = 0.25,
) -> None:
    """Compile, as optional work, the startup closure over this Python's own installed packages,
    while the build waits on the network (resolving): the pool remembers results by the source's
    sha256 and file name, so every module whose wheel holds the same bytes as the installed one
    (the usual case: ``requirements="auto"`` pins the installed versions) is not compiled again.
    The output cannot depend on it: a module that differs is simply compiled from the wheel.

    It starts only after ``delay`` seconds without :meth:`CompilePool.stop_optional`: a rebuild
    whose resolution is remembered has no wait to fill, and would only pay for the head start."""
    if pool.optional_stopped(delay):
        return
    files = ChainMap(dict(own), HostTree(site_packages, host_site_dirs()))
    try:
        startup_bytecode(files, search_path, roots, pool, optional=True)
    except Exception:  # noqa: BLE001 - a head start only; the real closure reports real errors
        return


def wheel_sources(wheel: Path, site_packages: str, zf: zipfile.ZipFile) -> dict[str, Source]:
    """The .py files a wheel installs into site-packages (its root and ``.data/purelib`` or
    ``platlib``), by image path, read from the open zip when asked."""
    root = image_path(site_packages)
    out: dict[str, Source] = {}
    for info in zf.infolist():
        name = info.filename
        if not name.endswith(".py") or info.is_dir():
            continue
        top, _, rest = name.partition("/")
        if top.endswith(".dist-info"):
            continue
        if top.endswith(".data"):
            scheme, _, rest = rest.partition("/")
            if scheme not in ("purelib", "platlib"):
                continue
            name = rest
        out[image_path(f"{root}/{name}", f"path in {wheel.name}")] = lambda zf=zf, info=info: (
            zf.read(info)
        )
    return out


def entry_sources(entries: Iterable[Entry]) -> dict[str, Source]:
    """The .py files among layer entries (built from a tree or from bytes)."""
    out: dict[str, Source] = {}
    for e in entries:
        if e.kind != "file" or not e.path.endswith(".py"):
            continue
        if e.data is not None:
            out[e.path] = lambda d=e.data: d
        elif e.source is not None:
            out[e.path] = lambda p=e.source: Path(p).read_bytes()
    return out


def modules_under(files: Iterable[str], directory: str) -> list[str]:
    """Module names of the .py files under ``directory`` (a search-path entry)."""
    d = directory.strip("/") + "/"
    names = []
    for path in files:
        if path.startswith(d) and path.endswith(".py"):
            mod = path[len(d) : -3].replace("/", ".")
            names.append(mod[: -len(".__init__")] if mod.endswith(".__init__") else mod)
    return sorted(names)


def bytecode_layer(
    files: Mapping[str, Source],
    search_path: list[str],
    roots: Iterable[str],
    store,
    compression: str,
    *,
    key: str | None = None,
    pool: CompilePool | None = None,
    trace: Trace | None = None,
) -> Layer | None:
    """The layer of :func:`startup_bytecode` (None when nothing compiles), remembered under
    ``key`` when one is given (a memo key over everything the bytes depend on); ``trace`` as
    there."""

    def make() -> Layer | None:
        own = pool is None
        p = pool or CompilePool()
        try:
            pycs = startup_bytecode(files, search_path, roots, p, trace=trace)
        finally:
            if own:
                p.close()
        if not pycs:
            return None
        return write_layer(
            [Entry.file(path, data) for path, data in pycs.items()], store, compression
        )

    return make() if key is None else memoized(store, key, make)
