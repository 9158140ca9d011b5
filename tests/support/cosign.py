"""The real ``cosign`` for tests: Debian 13's package, fetched once into a cache folder.

Debian 12 has no cosign (and its skopeo is built without sigstore), so this downloads trixie's
``cosign`` .deb with a private apt configuration (its own sources list, lists and cache under
``~/.cache/ociforge-test/cosign-apt``; the system's sources are not touched), checked by apt
against ``debian-archive-keyring``, and unpacks it with ``dpkg-deb -x`` into
``~/.cache/ociforge-test/cosign``. cosign is a static Go binary: nothing else is needed.

``python -m tests.support.cosign`` (run by ``scripts/test``) fetches it and prints its path;
:func:`cosign_path` does the same from a fixture. ``$OCIFORGE_TEST_COSIGN`` names another binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ociforge-test"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCE = f"deb [signed-by={KEYRING}] http://deb.debian.org/debian trixie main"


class CosignUnavailable(RuntimeError):
    pass


def _binary(root: Path) -> Path:
    return root / "cosign" / "usr" / "bin" / "cosign"


def _arch() -> str:
    out = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    return out.stdout.strip() or "amd64"


def fetch(root: Path = CACHE) -> Path:
    """Download and unpack trixie's cosign under ``root``; returns the binary's path."""
    apt = root / "cosign-apt"
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    sources = apt / "sources.list"
    sources.write_text(SOURCE + "\n")
    opts = [
        f"-oDir::Etc::sourcelist={sources}",
        "-oDir::Etc::sourceparts=-",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache={apt / 'cache'}",
        f"-oAPT::Architecture={_arch()}",
        "-oAPT::Sandbox::User=root",
        "-qq",
    ]

    def run(*args: str, cwd: Path | None = None) -> None:
        proc = subprocess.run(["apt-get", *opts, *args], cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CosignUnavailable(
                f"apt-get {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
            )

    if not Path(KEYRING).is_file():
        raise CosignUnavailable(f"{KEYRING} is missing: install debian-archive-keyring")
    run("update")
    for old in (apt / "debs").glob("cosign_*.deb"):
        old.unlink()
    run("download", "cosign", cwd=apt / "debs")
    debs = sorted((apt / "debs").glob("cosign_*.deb"))
    if not debs:
        raise CosignUnavailable("apt-get download cosign wrote no .deb")
    target = root / "cosign"
    shutil.rmtree(target, ignore_errors=True)
    proc = subprocess.run(
        ["dpkg-deb", "-x", str(debs[-1]), str(target)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise CosignUnavailable(f"dpkg-deb -x {debs[-1]} failed:\n{proc.stderr}")
    binary = _binary(root)
    if not binary.is_file():
        raise CosignUnavailable(f"{debs[-1]} holds no usr/bin/cosign")
    return binary


def cosign_path() -> Path:
    """The cosign binary: ``$OCIFORGE_TEST_COSIGN``, else the cached one, else fetched now."""
    named = os.environ.get("OCIFORGE_TEST_COSIGN")
    if named:
        if not Path(named).is_file():
            raise CosignUnavailable(f"OCIFORGE_TEST_COSIGN={named}: no such file")
        return Path(named)
    binary = _binary(CACHE)
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    return fetch(CACHE)


if __name__ == "__main__":
    try:
        print(cosign_path())
    except CosignUnavailable as e:
        print(f"cosign: {e}", file=sys.stderr)
        sys.exit(1)
