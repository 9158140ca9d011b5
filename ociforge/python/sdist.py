"""Pure-Python sdists built into wheels on the host, so a package that ships no wheel still installs.

A pure-Python wheel is the same on every platform, so building it here (with pip, in an isolated
build environment, as ``pip wheel`` always does) is exact for any target; nothing runs for the
target. A package whose build produces platform-specific code is refused: building it on the
host would give host machine code, and ociforge never runs the target.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from ..cachedir import default_cache_dir
from ..errors import OciforgeError


class SdistBuildError(OciforgeError):
    """An sdist that cannot become a pure-Python wheel (the message says why)."""


def built_wheels_dir() -> Path:
    return default_cache_dir() / "built-wheels"


def build_pure_wheel(
    name: str, version: str | None, index_args: list[str], cert: str | None = None
) -> Path:
    """A folder holding the pure wheel built from ``name``'s sdist (cached per name and version).

    ``index_args`` are pip/uv index options (``--index-url``, ``--find-links``...), so the sdist
    comes from the same indexes as everything else.
    """
    key = canonicalize_name(name)
    root = built_wheels_dir()
    if version:
        done = root / f"{key}-{version}"
        if any(done.glob("*.whl")):
            return done
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        spec = f"{name}=={version}" if version else name
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--isolated",
            "--no-deps",
            "--no-binary",
            name,
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp),
            *index_args,
        ]
        if cert:
            cmd += ["--cert", cert]
        proc = subprocess.run([*cmd, spec], capture_output=True, text=True, timeout=900)
        wheels = sorted(tmp.glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise SdistBuildError(
                f"{spec} has only a source distribution, and building it failed: "
                + " / ".join(tail)
            )
        _n, built_version, _b, tags = parse_wheel_filename(wheels[0].name)
        if not all(t.abi == "none" and t.platform == "any" for t in tags):
            raise SdistBuildError(
                f"{spec} has only a source distribution, and it builds platform-specific code "
                f"({wheels[0].name} on this machine); ociforge does not run the target to build it: "
                f"publish wheels for the target platforms or pick a version that has them"
            )
        dest = root / f"{key}-{built_version}"
        if dest.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(dest)
        return dest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
