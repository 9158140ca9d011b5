"""Resolution: requirements + targets → one :class:`~ociforge.python.lock.Lock` per target, run nowhere.

    resolve(requirements, targets, options=ResolveOptions()) -> {Target: Lock}

Which resolver, and why (measured on this project's CI machine, scikit-learn==1.5.2 for
linux/arm64, warm caches; torch==2.5.1 for linux/amd64 CUDA; see ``benchmarks/wheels_bench.py``):

=============================  ==================================  ==============================
                               ``pip install --dry-run --report``  ``uv pip compile --format
                               (pip 23.2, ``--platform`` …)        pylock.toml``
=============================  ==================================  ==============================
scikit-learn set, arm64        3.0 s                               0.3-0.6 s
torch + nvidia-* (CUDA plan)   47 s, **downloads 2.5 GB** of       0.6 s, downloads only
                               wheel bodies to read metadata       metadata (PEP 658), 1.3 MB
markers of dependencies        evaluated for the *host* (a known   evaluated for
                               pip limitation with ``--platform``) ``--python-platform``
sizes / URLs / sha256          URL + sha256; no size               URL, sha256, size
=============================  ==================================  ==============================

So ociforge resolves with uv (a declared dependency; the PyPI ``uv`` package ships the binary):
it is 5-80x faster, it is the only one of the two that can plan a CUDA image without fetching the
multi-GB wheels, and it evaluates ``platform_machine``-style markers for the target. uv does not
read pip's configuration, so :func:`pip_index_settings` reads it with pip's own loader (pip.conf,
``PIP_INDEX_URL``/``PIP_EXTRA_INDEX_URL``/``PIP_FIND_LINKS``, ``cert``) and passes it on; an air-
gapped mirror configured for pip therefore just works. Only a resolution that runs parses it: a
remembered one is looked up by a hash of what pip's configuration is read from
(:func:`pip_config_inputs`), which costs no import of pip. ``--index-strategy unsafe-best-match``
keeps pip's semantics (the best version across all indexes) unless the user asks otherwise.

After uv answers, every wheel is checked against :meth:`Target.tags` (computed by ``packaging``
for the target), and against the target's variant: a ``cpu`` target must not hold CUDA builds
(``+cu121`` local versions, ``nvidia-*`` CUDA libraries), a CUDA target must not hold ``+cpu``
builds or libraries of another CUDA major. A wrong local build is excluded and the resolution
retried; what cannot be fixed that way is an error that says what to change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import locale
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version
from uv import find_uv_bin

from ..cachedir import default_cache_dir
from ..errors import InvalidInput, NotFound, OciforgeError
from ..fsutil import atomic_write
from .indexauth import redact_text, split_index_args
from .lock import Lock, LockedWheel, dumps, find_lock, loads
from .sdist import SDIST_PIN, build_pure_wheel, built_wheels_dir, pinned_sdist
from .target import Target

log = logging.getLogger(__name__)

TOP_LEVEL = "<requirements>"
_PIP_CONF = "pip.conf"
# uv names the manylinux levels it can target; newer glibc adds no wheel tags in practice.
_UV_MAX_GLIBC_MINOR = 40
_UV_MIN_GLIBC_MINOR = 17
_CUDA_LIB = re.compile(
    r"^nvidia-(cublas|cuda-(cupti|nvrtc|runtime|nvcc)|cudnn|cufft|cufile|curand|cusolver|"
    r"cusparse|cusparselt|nccl|nvjitlink|nvtx|nvshmem)(-cu(?P<cuda>\d+))?$"
)
_MAX_VARIANT_RETRIES = 3
# CUDA libraries without a -cuXY suffix whose version is the CUDA version
_CUDA_VERSIONED = {"nvidia-cuda-runtime", "nvidia-cublas", "nvidia-cuda-nvrtc", "nvidia-cuda-cupti"}


class ResolutionError(OciforgeError):
    """The requirements cannot be satisfied for a target (message says which and why)."""


class NoWheel(ResolutionError):
    """A package has no wheel for a target; names package, version, target and what exists."""


@dataclass
class IndexSettings:
    """Where wheels come from. Defaults are the user's pip configuration."""

    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    cert: str | None = None

    def merged(self, other: IndexSettings) -> IndexSettings:
        """``other`` (command-line options) on top of ``self`` (pip configuration)."""
        return IndexSettings(
            other.index_url or self.index_url,
            self.extra_index_urls
            + [u for u in other.extra_index_urls if u not in self.extra_index_urls],
            self.find_links + [u for u in other.find_links if u not in self.find_links],
            other.no_index or self.no_index,
            other.cert or self.cert,
        )

    def uv_args(self) -> list[str]:
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        elif self.index_url:
            args += ["--index-url", self.index_url]
        if not self.no_index:
            for u in self.extra_index_urls:
                args += ["--extra-index-url", u]
        for f in self.find_links:
            args += ["--find-links", f]
        return args

    def credentials(self) -> dict[str, tuple[str, str]]:
        """host → (user, password) from index URLs that embed them (never written to a lock)."""
        out: dict[str, tuple[str, str]] = {}
        for u in [self.index_url or "", *self.extra_index_urls, *self.find_links]:
            p = urllib.parse.urlsplit(u)
            if p.username and p.hostname:
                out[p.hostname] = (
                    urllib.parse.unquote(p.username),
                    urllib.parse.unquote(p.password or ""),
                )
        return out


def pip_index_settings() -> IndexSettings:
    """The index settings pip would use here: env (``PIP_*``) over ``install`` over ``global``."""
    try:
        # pip's configuration machinery costs ~0.15 s to import: only when a build reads it
        from pip._internal.configuration import Configuration

        conf = Configuration(isolated=False)
        conf.load()
        items = dict(conf.items())
    except Exception as e:  # pip missing or a broken pip.conf: say so, do not guess
        raise InvalidInput(f"cannot read pip's configuration: {e}") from None

    def get(name: str) -> str | None:
        for section in (":env:", "install", "global"):
            if f"{section}.{name}" in items:
                return str(items[f"{section}.{name}"])
        return None

    def split(name: str) -> list[str]:
        return (get(name) or "").split()

    no_index = (get("no-index") or "").lower() in ("1", "true", "yes", "on")
    return IndexSettings(
        get("index-url"), split("extra-index-url"), split("find-links"), no_index, get("cert")
    )


def pip_config_files() -> list[str]:
    """Every file pip's configuration can be read from here, on Linux, in pip's order (pip's
    ``Configuration.iter_config_files``): ``$PIP_CONFIG_FILE``; the global files
    (``$XDG_CONFIG_DIRS``, default ``/etc/xdg``, each ``/pip/pip.conf``, then ``/etc/pip.conf``);
    the user's (``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME``, default ``~/.config``, ``/pip/pip.conf``;
    listed even where pip skips them); the environment's (``sys.prefix/pip.conf``)."""
    env = os.environ
    files = [env["PIP_CONFIG_FILE"]] if "PIP_CONFIG_FILE" in env else []
    dirs = env.get("XDG_CONFIG_DIRS", "")
    for d in (dirs if dirs.strip() else "/etc/xdg").split(os.pathsep):
        files.append(os.path.join(os.path.expanduser(d), "pip", _PIP_CONF))
    files.append(os.path.join("/etc", _PIP_CONF))
    files.append(os.path.join(os.path.expanduser("~"), ".pip", _PIP_CONF))
    home = env.get("XDG_CONFIG_HOME", "")
    home = home if home.strip() else os.path.expanduser("~/.config")
    files.append(os.path.join(home, "pip", _PIP_CONF))
    files.append(os.path.join(sys.prefix, _PIP_CONF))
    return files


def pip_config_inputs() -> str | None:
    """A sha256 of everything :func:`pip_index_settings` is made of, read raw: pip's version, the
    encoding it reads files with, every file of :func:`pip_config_files` (its bytes, or that it
    is missing) and every ``PIP_*`` variable. The same hash, the same settings; any change to
    one of them, a new hash (a harmless miss where the settings come out the same).

    This costs a few ``open``/``read`` calls where parsing costs pip's configuration machinery
    (~0.2 s to import). Only the hash is kept: the inputs can hold index credentials. None where
    the files cannot be listed (not Linux), pip is missing, or one is there but not a plain
    readable file: the caller parses instead (and fails as a resolution would).
    """
    if not sys.platform.startswith("linux") or importlib.util.find_spec("pip") is None:
        return None
    try:
        pip_version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        return None
    h = hashlib.sha256()
    for part in (pip_version, locale.getpreferredencoding(False)):
        h.update(f"{part}\0".encode())
    for path in pip_config_files():
        try:
            if not stat.S_ISREG(os.stat(path).st_mode) and path != os.devnull:
                return None  # a folder, a pipe...: as pip makes of it
            with open(path, "rb") as f:
                state = hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            state = "missing"
        except OSError:
            return None  # unreadable: as pip makes of it
        h.update(f"file\0{path}\0{state}\0".encode("utf-8", "surrogateescape"))
    for name, value in sorted(os.environ.items()):
        if name.startswith("PIP_"):
            h.update(f"env\0{name}\0{value}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass
class ResolveOptions:
    """How to resolve. ``index`` is added to the user's pip configuration (``use_pip_config``)."""

    index: IndexSettings = field(default_factory=IndexSettings)
    use_pip_config: bool = True
    constraints: list[str] = field(default_factory=list)  # constraint files (-c)
    index_strategy: str = "unsafe-best-match"
    torch_backend: bool = False  # ask uv for PyTorch's own index of the target's variant
    offline: bool = False
    jobs: int = 4
    # Fill each wheel's requested_by. That takes a second uv run of the same resolution (about
    # 0.8 s of CPU for the example; pylock.toml has no dependency edges); a build, which never
    # shows them, leaves it out, except to explain a wrong-variant problem.
    annotate: bool = True
    # No variant was named: a cpu target whose resolution pulls in CUDA builds becomes the CUDA
    # variant they are built for (the lock's target says which; see variant_note).
    infer_variant: bool = False

    def settings(self) -> IndexSettings:
        base = pip_index_settings() if self.use_pip_config else IndexSettings()
        return base.merged(self.index)

    def index_key(self) -> str:
        """A sha256 that changes whenever :meth:`settings` can: pip's raw configuration inputs
        (:func:`pip_config_inputs`) and these options' own index settings, with nothing parsed;
        where those inputs cannot be listed, the parsed settings. A hash, never the settings
        themselves: index URLs can hold credentials."""
        pip = pip_config_inputs() if self.use_pip_config else "not used"
        if pip is None:
            merged = self.settings()
            material: list = ["parsed", merged.uv_args(), merged.cert]
        else:
            material = ["raw", pip, dataclasses.asdict(self.index)]
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def uv_bin() -> str:
    """The uv executable shipped by the ``uv`` package (or ``$OCIFORGE_UV``)."""
    env = os.environ.get("OCIFORGE_UV")
    if env:
        return env
    try:
        return find_uv_bin()
    except Exception:
        found = shutil.which("uv")
        if found:
            return found
        raise NotFound("the 'uv' resolver is not installed (pip install uv)") from None


def uv_python_platform(target: Target) -> str:
    if target.libc == "musl":
        return f"{target.machine}-unknown-linux-musl"
    major, minor = target.libc_version
    minor = max(_UV_MIN_GLIBC_MINOR, min(minor, _UV_MAX_GLIBC_MINOR))
    return f"{target.machine}-manylinux_{major}_{minor}"


def _requirements_file(requirements: list[str] | str | os.PathLike, tmp: Path) -> Path:
    """A requirements file for uv: the user's own file as given, or the strings written out."""
    if isinstance(requirements, (str, os.PathLike)) and Path(requirements).is_file():
        return Path(requirements).resolve()
    if isinstance(requirements, str):
        raise NotFound(f"requirements file {requirements} does not exist")
    lines = []
    for r in requirements:
        r = str(r).strip()
        if not r:
            continue
        if not r.startswith("-"):
            try:
                Requirement(r)
            except InvalidRequirement as e:
                raise InvalidInput(f"invalid requirement {r!r}: {e}") from None
        lines.append(r)
    if not lines:
        raise InvalidInput("no requirements given")
    path = tmp / "requirements.in"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_requirement_lines(path: Path) -> list[str]:
    """The requirement lines as the user wrote them (recorded in the lock, not interpreted)."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _uv_env(settings: IndexSettings) -> dict[str, str]:
    env = dict(os.environ)
    if settings.cert and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = settings.cert
    env.setdefault("UV_NO_PROGRESS", "1")
    # Index URLs with credentials: here, not on the command line (see _uv_args).
    env.update(split_index_args(settings.uv_args(), "uv")[1])
    return env


def _run_uv(args: list[str], settings: IndexSettings, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, env=_uv_env(settings), check=False
        )
    except OSError as e:
        raise NotFound(f"cannot run the resolver for {what}: {e.strerror}") from None


def _start_uv(args: list[str], settings: IndexSettings) -> subprocess.Popen | None:
    """uv started in the background (None when it cannot start: its answer is optional)."""
    try:
        return subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_uv_env(settings),
        )
    except OSError:
        return None


_VIA = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)(?:\[[^\]]*\])?==(\S+)\s*(?:#\s*via\s*(.*))?$")


def _parse_via(text: str) -> dict[str, tuple[str, ...]]:
    """``name==ver  # via a, b`` lines (uv's line annotation style) → {name: (a, b)}."""
    out: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        m = _VIA.match(line.strip())
        if not m:
            continue
        via = [v.strip() for v in (m.group(3) or "").split(",") if v.strip()]
        names = []
        for v in via:
            if v.startswith("-r ") or v.startswith("-c "):
                names.append(TOP_LEVEL)
            else:
                names.append(canonicalize_name(v.split("[")[0].split()[0]))
        out[canonicalize_name(m.group(1))] = tuple(sorted(set(names)))
    return out


def _strip_auth(url: str) -> str:
    p = urllib.parse.urlsplit(url)
    if p.username or p.password:
        netloc = p.hostname or ""
        if p.port:
            netloc += f":{p.port}"
        return urllib.parse.urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))
    return url


def _size_of(url: str, given: int | None) -> int | None:
    if given is not None:
        return int(given)
    if url.startswith("file:"):
        try:
            return os.stat(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)).st_size
        except OSError:
            return None
    return None


def _no_wheel_error(out: str, target: Target) -> NoWheel | None:
    """Turn uv's explanation into our message: package, version, target, what exists instead."""
    m = re.search(
        r"Because (?:only )?([A-Za-z0-9][A-Za-z0-9._\-]*)(?:(==|<=|>=|<|>|!=|~=)([^\s,]+))? has no "
        r"(?:usable )?wheels",
        out,
    )
    if not m:
        m2 = re.search(r"there (?:is|are) no versions? of ([A-Za-z0-9][A-Za-z0-9._\-]*)(\S*)", out)
        if not m2:
            return None
        name, version = m2.group(1), m2.group(2) or "(any version)"
        instead = "no matching version on the configured indexes"
    else:
        name = m.group(1)
        version = m.group(3) or "(any version)"
        hints = [
            ln.strip()[len("hint:") :].strip()
            for ln in out.splitlines()
            if ln.strip().startswith("hint:")
        ]
        instead = (
            " ".join(h for h in hints if name in h) or "no wheel for any platform tag listed above"
        )
        if "no usable wheels" in out and not hints:
            instead = "only a source distribution (sdist), and ociforge installs wheels only"
    plats = ", ".join(target.platform_tags()[:2])
    err = NoWheel(
        f"{name} {version} has no wheel for target {target.key} "
        f"(needs a {target.abi()}/abi3/py3 wheel tagged like {plats}); what exists instead: {instead}"
    )
    err.package = name
    err.version = m.group(3) if m else None
    err.sdist_only = bool(m) and (
        "building from source is disabled" in out or "only a source distribution" in instead
    )
    return err


def _uv_args(
    target: Target,
    reqs: Path,
    settings: IndexSettings,
    opts: ResolveOptions,
    excludes: list[str],
    tmp: Path,
) -> list[str]:
    if target.implementation != "cp":
        raise InvalidInput(f"target {target.key}: only CPython targets can be resolved")
    args = [
        uv_bin(),
        "pip",
        "compile",
        "--no-config",
        "--quiet",
        "--no-header",
        "--python-platform",
        uv_python_platform(target),
        "--python-version",
        target.python,
        "--only-binary",
        ":all:",
        "--index-strategy",
        opts.index_strategy,
        *split_index_args(settings.uv_args(), "uv")[0],  # no credentials: they go in _uv_env
    ]
    if opts.offline:
        args.append("--offline")
    if opts.torch_backend:
        args += ["--torch-backend", target.variant]
    for c in opts.constraints:
        args += ["--constraint", str(Path(c).resolve())]
    if excludes:
        ex = tmp / "variant-constraints.txt"
        ex.write_text("".join(f"{e}\n" for e in excludes))
        args += ["--constraint", str(ex)]
    return args + [str(reqs)]


def _variant_problems(target: Target, pkgs: list[LockedWheel]) -> tuple[list[str], list[str]]:
    """(constraints that exclude a wrong local build, problems no constraint can fix)."""
    exclude, fatal = [], []
    cuda = target.cuda
    cpu_libs: dict[str, list[str]] = {}  # parent -> CUDA libraries it pulls into a cpu target
    by_key = {p.key: p for p in pkgs}
    for p in pkgs:
        local = Version(p.version).local or ""
        if local and (local == "cpu" or re.fullmatch(r"cu\d+", local)):
            ok = local == "cpu" if cuda is None else local != "cpu" and _cuda_local_ok(local, cuda)
            if not ok:
                exclude.append(f"{p.name}!={p.version}")
        lib = _CUDA_LIB.match(p.key)
        if not lib:
            continue
        if cuda is None:
            for parent in _origins(p.key, by_key) or [TOP_LEVEL]:
                cpu_libs.setdefault(parent, []).append(p.name)
        elif lib.group("cuda") and int(lib.group("cuda")) != cuda[0]:
            fatal.append(
                f"{p.name} {p.version} is built for CUDA {lib.group('cuda')}, not {cuda[0]}"
            )
    for parent, libs in sorted(cpu_libs.items()):
        libs_text = f"{len(libs)} CUDA libraries ({', '.join(sorted(libs))})"
        if parent == TOP_LEVEL or parent not in by_key:
            fatal.append(f"the requirements name {libs_text} themselves")
        else:
            fatal.append(
                f"{by_key[parent].name} {by_key[parent].version} is a CUDA build here: "
                f"it pulls in {libs_text}"
            )
    return exclude, fatal


def _origins(key: str, by_key: dict[str, LockedWheel]) -> list[str]:
    """The packages that pulled the CUDA library ``key`` in, through any other CUDA libraries
    (nvidia-cuda-nvrtc-cu12 via nvidia-cublas-cu12 via jax-cuda12-plugin: jax-cuda12-plugin),
    and ``TOP_LEVEL`` when the requirements name it."""
    found: set[str] = set()
    seen = {key}
    todo = [key]
    while todo:
        wheel = by_key.get(todo.pop())
        for r in wheel.requested_by if wheel is not None else ():
            if r in seen:
                continue
            seen.add(r)
            if _CUDA_LIB.match(r):
                todo.append(r)
            else:
                found.add(r)
    return sorted(found)


def implied_variant(pkgs: list[LockedWheel]) -> str | None:
    """The CUDA variant a resolution's builds are for: ``cu121`` from a ``+cu121`` build, else
    ``cu12`` from the CUDA libraries (``nvidia-cublas-cu12``, or the version of an unsuffixed
    ``nvidia-cuda-runtime``); None when it holds no CUDA build (or none says which CUDA)."""
    local = sorted(
        {lv for p in pkgs if re.fullmatch(r"cu\d{2,}", lv := (Version(p.version).local or ""))}
    )
    if local:
        return local[-1]
    majors = set()
    for p in pkgs:
        lib = _CUDA_LIB.match(p.key)
        if lib and lib.group("cuda"):
            majors.add(int(lib.group("cuda")))
        elif lib and p.key in _CUDA_VERSIONED:
            majors.add(Version(p.version).major)
    return f"cu{max(majors)}" if majors and max(majors) >= 10 else None


def variant_note(requested: Target, lock: Lock) -> str | None:
    """One line saying that no variant was named and the resolution took another (None when it
    did not): which builds made it, and how to refuse them."""
    if lock.target.variant == requested.variant:
        return None
    pkgs = lock.packages
    builds = [
        f"{p.name} {p.version}"
        for p in pkgs
        if re.fullmatch(r"cu\d+", Version(p.version).local or "")
    ]
    builds += [p.name for p in pkgs if "cuda" in p.key and not _CUDA_LIB.match(p.key)]
    libs = [p.name for p in pkgs if _CUDA_LIB.match(p.key)]
    if libs:
        more = ", ..." if len(libs) > 3 else ""
        builds.append(f"{len(libs)} CUDA libraries: {', '.join(libs[:3])}{more}")
    what = ", ".join(builds) or "the lock's"
    return (
        f"{requested.platform}: no variant named, and the requirements resolve to CUDA builds "
        f"({what}): taking variant {lock.target.variant} (name the variant to choose another)"
    )


def _cuda_local_ok(local: str, cuda: tuple[int, int | None]) -> bool:
    digits = local[2:]
    major, minor = int(digits[:2]), int(digits[2:] or 0)
    return major == cuda[0] and (cuda[1] is None or minor == cuda[1])


def resolve_one(
    requirements: list[str] | str | os.PathLike,
    target: Target,
    options: ResolveOptions | None = None,
    settings: IndexSettings | None = None,
) -> Lock:
    """Resolve for one target. Raises :class:`NoWheel` / :class:`ResolutionError`."""
    opts = options or ResolveOptions()
    settings = settings or opts.settings()
    excludes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ociforge-resolve-") as td:
        tmp = Path(td)
        reqs = _requirements_file(requirements, tmp)
        built: set[str] = set()
        for _ in range(_MAX_VARIANT_RETRIES + 1):
            try:
                lock = _resolve_pass(reqs, target, opts, settings, excludes, tmp, opts.annotate)
            except NoWheel as e:
                # A pure-Python sdist becomes a wheel on the host (the same for every platform),
                # and the resolution is retried with it; anything else stays an error.
                if not getattr(e, "sdist_only", False) or e.package in built or opts.offline:
                    raise

                found = build_pure_wheel(e.package, e.version, settings.uv_args(), settings.cert)
                built.add(e.package)
                settings = settings.merged(IndexSettings(find_links=[str(found)]))
                continue
            implied = implied_variant(lock.packages) if opts.infer_variant else None
            if implied is not None and target.cuda is None:
                # CUDA builds with no variant named: the user asked for CUDA. Resolved again
                # for that variant, so its own checks (one CUDA major, no +cpu builds) apply.
                return resolve_one(
                    requirements,
                    dataclasses.replace(target, variant=implied),
                    dataclasses.replace(opts, infer_variant=False),
                    settings,
                )
            more, fatal = _variant_problems(target, lock.packages)
            if (more or fatal) and not opts.annotate:  # the messages name who pulled them in
                lock = _resolve_pass(reqs, target, opts, settings, excludes, tmp, True)
                more, fatal = _variant_problems(target, lock.packages)
            if fatal:
                hint = (
                    "use a CPU build (for PyTorch: the index https://download.pytorch.org/whl/cpu, "
                    "or --torch-backend) or a CUDA variant target"
                    if target.cuda is None
                    else "pin a build for this CUDA version or change the target's variant"
                )
                raise ResolutionError(
                    f"target {target.key}: the resolution holds builds of the wrong variant: "
                    f"{'; '.join(fatal)}; {hint}"
                )
            new = [e for e in more if e not in excludes]
            if not new:
                if more:
                    raise ResolutionError(
                        f"target {target.key}: only builds of another variant are available: "
                        f"{', '.join(more)}"
                    )
                lock.requirements = read_requirement_lines(reqs)
                return lock
            log.info("%s: excluding builds of another variant: %s", target.key, ", ".join(new))
            excludes += new
    raise ResolutionError(
        f"target {target.key}: could not settle on builds for variant {target.variant}"
    )


def _resolve_pass(
    reqs: Path,
    target: Target,
    opts: ResolveOptions,
    settings: IndexSettings,
    excludes: list[str],
    tmp: Path,
    annotate: bool = True,
) -> Lock:
    base = _uv_args(target, reqs, settings, opts, excludes, tmp)
    pylock = tmp / "pylock.toml"
    pylock.unlink(missing_ok=True)
    # requested_by comes from a second uv run of the same resolution (the "via" annotations);
    # it runs beside the first instead of after it (the two were 1.3 + 0.75 s).
    via_proc = (
        _start_uv(base + ["--annotation-style", "line", "--no-strip-extras"], settings)
        if annotate
        else None
    )
    try:
        res = _run_uv(base + ["--format", "pylock.toml", "-o", str(pylock)], settings, target.key)
        if res.returncode != 0:
            out = _strip_auth_text(res.stderr + res.stdout, settings)
            err = _no_wheel_error(out, target)
            if err:
                raise err
            raise ResolutionError(f"cannot resolve for target {target.key}:\n{out.strip()}")
        via_out = via_proc.communicate()[0] if via_proc is not None else ""
        via = _parse_via(via_out) if via_proc is not None and via_proc.returncode == 0 else {}
    finally:
        if via_proc is not None and via_proc.poll() is None:
            via_proc.kill()
            via_proc.communicate()
    doc = tomllib.loads(pylock.read_text())
    pkgs: list[LockedWheel] = []
    for p in doc.get("packages", []):
        wheels = p.get("wheels") or []
        if not wheels:
            raise NoWheel(
                f"{p['name']} {p.get('version', '?')} has no wheel for target {target.key}; "
                f"what exists instead: only a source distribution"
            )
        w = wheels[0]
        url = _strip_auth(w["url"])
        filename = w.get("name") or urllib.parse.unquote(url.rsplit("/", 1)[-1].split("#")[0])
        if not target.supports(filename):
            raise NoWheel(
                f"{p['name']} {p.get('version')}: the resolver picked {filename}, which does not fit "
                f"target {target.key}"
            )
        sha = (w.get("hashes") or {}).get("sha256")
        if not sha:
            raise ResolutionError(f"{filename}: the index gives no sha256; cannot lock it")
        name = canonicalize_name(p["name"])
        pkgs.append(
            LockedWheel(
                name,
                str(p["version"]),
                filename,
                url,
                sha.lower(),
                _size_of(w["url"], w.get("size")),
                via.get(name, ()),
                sdist_sha256=_sdist_pin(w["url"]),
            )
        )
    return Lock(target, pkgs)


def _sdist_pin(url: str) -> str | None:
    """For a wheel ociforge built from an sdist: that sdist's sha256 (recorded in the lock)."""
    p = urllib.parse.urlsplit(url)
    if p.scheme != "file":
        return None
    folder = Path(urllib.request.url2pathname(p.path)).parent
    if (
        folder.parent.resolve() != built_wheels_dir().resolve()
        or not (folder / SDIST_PIN).is_file()
    ):
        return None
    return pinned_sdist(folder)


def _strip_auth_text(text: str, settings: IndexSettings) -> str:
    """uv's output with the credentials of the index URLs hidden (user part and password)."""
    return redact_text(text, settings.credentials().values())


def resolve(
    requirements: list[str] | str | os.PathLike,
    targets: list[Target],
    options: ResolveOptions | None = None,
) -> dict[Target, Lock]:
    """Resolve for every target (in parallel; each is an independent resolution)."""
    opts = options or ResolveOptions()
    if not targets:
        raise InvalidInput("no targets to resolve for")
    index_key, remember = opts.index_key(), resolve_ttl() > 0
    paths = {t: _memo_path(requirements, t, opts, index_key) if remember else None for t in targets}
    found = {t: lock for t in targets if (lock := _fresh_memo(paths[t], t, opts)) is not None}
    missing = [t for t in targets if t not in found]
    if missing:
        settings = opts.settings()  # pip's configuration parsed only when something resolves
        with ThreadPoolExecutor(max_workers=max(1, min(opts.jobs, len(missing)))) as ex:
            futures = {
                t: ex.submit(_resolve_remembering, requirements, t, opts, settings, paths[t])
                for t in missing
            }
            found.update({t: f.result() for t, f in futures.items()})
    return {t: found[t] for t in targets}


def resolve_ttl() -> float:
    """How long a resolution is reused, in seconds: ``$OCIFORGE_RESOLVE_TTL``, default 24 hours.

    A rebuild then resolves nothing (as a Dockerfile's cached ``RUN pip install`` never does);
    ``0`` resolves every time. A lock file (``ociforge lock``) pins a resolution for good.
    """
    raw = os.environ.get("OCIFORGE_RESOLVE_TTL", "").strip()
    try:
        return float(raw) if raw else 24 * 3600.0
    except ValueError:
        raise InvalidInput(f"OCIFORGE_RESOLVE_TTL={raw!r} is not a number of seconds") from None


def _memo_path(requirements, target: Target, opts: ResolveOptions, index_key: str) -> Path:
    """Where the resolution of ``requirements`` for ``target`` is remembered: named by a hash of
    all it depends on (``index_key``: :meth:`ResolveOptions.index_key`)."""
    if isinstance(requirements, (str, os.PathLike)):
        reqs = read_requirement_lines(Path(requirements))
    else:
        reqs = [str(r) for r in requirements]
    constraints = [
        Path(c).read_text(errors="replace") for c in opts.constraints if Path(c).is_file()
    ]
    blob = json.dumps(
        [
            reqs,
            target.to_json(),
            index_key,
            opts.index_strategy,
            opts.torch_backend,
            constraints,
            opts.constraints,
            opts.annotate,
        ],
        sort_keys=True,
    ).encode()
    return default_cache_dir() / "resolutions" / f"{hashlib.sha256(blob).hexdigest()}.json"


def _fresh(path: Path | None) -> bool:
    try:
        return path is not None and time.time() - path.stat().st_mtime < resolve_ttl()
    except OSError:
        return False


def remembered(
    requirements: list[str] | str | os.PathLike,
    targets: list[Target],
    options: ResolveOptions | None = None,
) -> bool:
    """Whether :func:`resolve` would answer from its memo for every target (no network, no uv):
    a build then has no resolution to overlap other work with."""
    opts = options or ResolveOptions()
    if resolve_ttl() <= 0:
        return False
    index_key = opts.index_key()
    return all(_fresh(_memo_path(requirements, t, opts, index_key)) for t in targets)


def recall(
    requirements: list[str] | str | os.PathLike,
    targets: list[Target],
    options: ResolveOptions | None = None,
) -> dict[Target, Lock]:
    """The resolution remembered for ``requirements`` and each target that has one, whatever its
    age (offline, a resolution never expires): what :func:`resolve` with ``options`` wrote, or
    else the same resolution with the other ``annotate`` (``ociforge fetch`` and ``ociforge
    lock`` annotate theirs; the wheels are the same). No network, no uv."""
    opts = options or ResolveOptions()
    index_key = opts.index_key()
    found: dict[Target, Lock] = {}
    for target in targets:
        for o in (opts, dataclasses.replace(opts, annotate=not opts.annotate)):
            try:
                path = _memo_path(requirements, target, o, index_key)
                found[target] = find_lock(loads(path.read_text()), target, opts.infer_variant)
                break
            except (OciforgeError, OSError):
                continue  # not remembered, or unreadable: a miss
    return found


def _fresh_memo(path: Path | None, target: Target, opts: ResolveOptions) -> Lock | None:
    """The resolution remembered at ``path`` in the last ``resolve_ttl()`` seconds, or None (an
    unreadable memo is just a miss)."""
    if not _fresh(path):
        return None
    try:
        return find_lock(loads(path.read_text()), target, opts.infer_variant)
    except (OciforgeError, OSError):
        return None


def _resolve_remembering(
    requirements, target: Target, opts: ResolveOptions, settings: IndexSettings, path: Path | None
) -> Lock:
    """:func:`resolve_one`, remembered at ``path`` (None: not remembered, the TTL is 0)."""
    lock = resolve_one(requirements, target, opts, settings)
    if path is not None:
        atomic_write(path, dumps([lock]), mkdir=True)
    return lock


def wheel_tags_summary(filename: str) -> str:
    _, _, _, wtags = parse_wheel_filename(filename)
    return ".".join(sorted({t.platform for t in wtags}))
