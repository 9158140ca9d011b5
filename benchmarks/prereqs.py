"""What the table needs on the machine, installed when missing (Debian packages, via apt-get).

buildah is the Dockerfile baseline, skopeo and docker-registry the push baseline, bubblewrap runs
the images, zstd and gzip are the layer-writing baselines; gpgv and Debian's keyring check the
signed package index the bases are built from.
"""

from __future__ import annotations

import os
import shutil
import subprocess

DEBS = {
    "buildah": "buildah",
    "skopeo": "skopeo",
    "docker-registry": "docker-registry",
    "bwrap": "bubblewrap",
    "zstd": "zstd",
    "gzip": "gzip",
    "tar": "tar",
    "sha256sum": "coreutils",
    "gpgv": "gpgv",
}
FILES = {"/usr/share/keyrings/debian-archive-keyring.gpg": "debian-archive-keyring"}


def missing() -> list[str]:
    need = {deb for tool, deb in DEBS.items() if shutil.which(tool) is None}
    need |= {deb for path, deb in FILES.items() if not os.path.exists(path)}
    return sorted(need)


def ensure(log) -> None:
    need = missing()
    if not need:
        return
    log(f"installing Debian packages: {' '.join(need)}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    still = missing()
    if still:
        raise RuntimeError(f"still missing after apt-get install: {' '.join(still)}")
