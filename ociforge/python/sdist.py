"""Pure-Python sdists built into wheels on the host, so a package that ships no wheel still installs.

A pure-Python wheel is the same on every platform, so building it here (with pip, in an isolated
build environment, as ``pip wheel`` always does) is exact for any target; nothing runs for the
target. A package whose build produces platform-specific code is refused: building it on the
host would give host machine code, and ociforge never runs the target.

Building runs the package's own build backend (its ``setup.py`` or PEP 517 hooks) on this
machine, from a source nobody pinned: a warning says so, naming the package. The sdist is
downloaded first, by itself, and hashed; its sha256 is kept beside the built wheel
(``sdist.json``) and a lock records it (``sdist_sha256``), and building it again (a build from
that lock on a machine without the wheel) refuses an sdist that no longer matches. The wheel is
built with ``SOURCE_DATE_EPOCH`` fixed, so the same sdist gives the same wheel bytes, which the
lock's wheel hash then checks too.

pip gets index URLs that carry credentials through its environment, never its command line
(:mod:`ociforge.python.indexauth`), and runs with no configuration of its own
(``PIP_CONFIG_FILE`` is ``os.devnull``) and none of the caller's ``PIP_*`` variables, as
``--isolated`` did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from ..cachedir import default_cache_dir
from ..errors import OciforgeError
from .indexauth import redact_text, split_index_args

log = logging.getLogger(__name__)

SDIST_PIN = "sdist.json"  # beside a built wheel: {"filename", "sha256"} of the sdist it came from
BUILD_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip holds: wheels built reproducibly


class SdistBuildError(OciforgeError):
    """An sdist that cannot become a pure-Python wheel (the message says why)."""


def built_wheels_dir() -> Path:
    return default_cache_dir() / "built-wheels"


def pinned_sdist(folder: Path) -> str | None:
    """The sha256 of the sdist a built-wheels folder was made from (None when not recorded)."""
    try:
        return str(json.loads((folder / SDIST_PIN).read_text())["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pip_command(
    action: list[str], index_args: list[str], cert: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """``python -m pip ACTION...`` and its environment: index URLs that carry credentials in the
    environment, no user configuration, none of the caller's ``PIP_*`` variables."""
    args, index_env = split_index_args(index_args, "pip")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(index_env)
    cmd = [sys.executable, "-m", "pip", *action, "--disable-pip-version-check", "-q", *args]
    if cert:
        cmd += ["--cert", cert]
    return cmd, env


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _run_pip(cmd: list[str], env: dict[str, str], spec: str, doing: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode != 0:
        tail = redact_text((proc.stderr or proc.stdout).strip()).splitlines()[-5:]
        raise SdistBuildError(
            f"{spec} has only a source distribution, and {doing} it failed: " + " / ".join(tail)
        )


def build_pure_wheel(
    name: str,
    version: str | None,
    index_args: list[str],
    cert: str | None = None,
    sdist_sha256: str | None = None,
) -> Path:
    """A folder holding the pure wheel built from ``name``'s sdist (cached per name and version).

    ``index_args`` are pip/uv index options (``--index-url``, ``--find-links``...), so the sdist
    comes from the same indexes as everything else. ``sdist_sha256`` (from a lock) is the hash
    the sdist must have; a cached wheel built from another sdist is built again.
    """
    key = canonicalize_name(name)
    root = built_wheels_dir()
    spec = f"{name}=={version}" if version else name
    if version:
        done = root / f"{key}-{version}"
        if any(done.glob("*.whl")) and sdist_sha256 in (None, pinned_sdist(done)):
            return done
    log.warning(
        "%s has no wheel: building its sdist runs the package's build backend on this machine",
        spec,
    )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        src = tmp / ".sdist"
        cmd, env = pip_command(
            ["download", "--no-deps", "--no-binary", name, "-d", str(src)], index_args, cert
        )
        _run_pip([*cmd, spec], env, spec, "downloading")
        sdists = sorted(src.iterdir()) if src.is_dir() else []
        if len(sdists) != 1 or sdists[0].name.endswith(".whl"):
            raise SdistBuildError(f"{spec}: pip did not download one source distribution")
        got = _sha256(sdists[0])
        if sdist_sha256 is not None and got != sdist_sha256:
            raise SdistBuildError(
                f"{spec}: the sdist {sdists[0].name} hashes to sha256:{got}, but the lock pins "
                f"sha256:{sdist_sha256}; not built"
            )
        cmd, env = pip_command(["wheel", "--no-deps", "-w", str(tmp)], index_args, cert)
        env["SOURCE_DATE_EPOCH"] = BUILD_EPOCH
        _run_pip([*cmd, str(sdists[0])], env, spec, "building")
        wheels = sorted(tmp.glob("*.whl"))
        if len(wheels) != 1:
            raise SdistBuildError(f"{spec}: building its sdist gave {len(wheels)} wheels, not one")
        _n, built_version, _b, tags = parse_wheel_filename(wheels[0].name)
        if not all(t.abi == "none" and t.platform == "any" for t in tags):
            raise SdistBuildError(
                f"{spec} has only a source distribution, and it builds platform-specific code "
                f"({wheels[0].name} on this machine); ociforge does not run the target to build it: "
                f"publish wheels for the target platforms or pick a version that has them"
            )
        (tmp / SDIST_PIN).write_text(json.dumps({"filename": sdists[0].name, "sha256": got}))
        shutil.rmtree(src, ignore_errors=True)
        dest = root / f"{key}-{built_version}"
        if dest.exists() and pinned_sdist(dest) == got:
            return dest  # built meanwhile (another target's resolution), from the same sdist
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)  # built from another sdist: replaced
        tmp.rename(dest)
        return dest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
