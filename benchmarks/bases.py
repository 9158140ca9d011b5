"""The two bases the table needs, built once per machine and reused (setup, never timed).

* The ociforge base (``python3.11-bookworm``, amd64 + arm64), built into a *seed* cache. A cold
  ociforge build gets a fresh ``OCIFORGE_CACHE`` holding only the seed's ``bases/`` and
  ``blobs/`` (hard links), which is exactly "base already built, nothing else cached".
* The Dockerfile base: what a ``FROM python:3.11-slim`` user starts from, made from the same
  Debian packages so only the build method differs. Our base has no shell and no pip, and a
  Dockerfile needs both (``RUN pip install ...`` runs ``/bin/sh -c``), so this one adds Debian's
  ``dash`` (``/bin/sh``) and the current pip from PyPI in ``/usr/local`` (where the official
  python images keep it), runs as root like them, and is written as an OCI layout that
  buildah pulls before each timed build.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ociforge.bases import base as obase
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.image import ConfigChanges, append, make_index, store_source
from ociforge.oci.layer import write_layer
from ociforge.python.install import install_entries
from ociforge.python.target import debian_target
from ociforge.transports.layout import read_layout, write_layout

RECIPE = "python3.11-bookworm"
PLATFORMS = ("linux/amd64", "linux/arm64")
DF_SITE = "/usr/local/lib/python3.11/dist-packages"


def bench_home() -> Path:
    """Where the bases persist between runs: ``$OCIFORGE_BENCH_HOME`` or ~/.cache/ociforge-bench."""
    env = os.environ.get("OCIFORGE_BENCH_HOME")
    return Path(env) if env else Path.home() / ".cache" / "ociforge-bench"


@dataclasses.dataclass(frozen=True)
class Bases:
    seed: Path  # an OCIFORGE_CACHE holding the built ociforge base (and its .deb downloads)
    dockerfile_base: Path  # OCI layout, tag "base": the Dockerfile's FROM (amd64 + arm64)
    pip_version: str
    uv_base: Path | None = None  # the same plus uv in /usr/local/bin (the uv Dockerfile's FROM)
    uv_version: str = ""


def _with_cache(cache: Path):
    """Run base building with ``OCIFORGE_CACHE`` pointed at ``cache`` (ociforge reads the env)."""

    class _Env:
        def __enter__(self):
            self.old = os.environ.get("OCIFORGE_CACHE")
            os.environ["OCIFORGE_CACHE"] = str(cache)

        def __exit__(self, *exc):
            if self.old is None:
                os.environ.pop("OCIFORGE_CACHE", None)
            else:
                os.environ["OCIFORGE_CACHE"] = self.old

    return _Env()


def build_seed(home: Path) -> Path:
    """The ociforge base for both platforms in a cache of its own (a no-op once built)."""
    seed = home / "seed"
    with _with_cache(seed):
        obase.build(RECIPE, list(PLATFORMS))
    return seed


def seed_cache(seed: Path, dest: Path) -> Path:
    """A fresh ociforge cache with only the built base in it (hard links: instant, no copy)."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("bases", "blobs"):
        subprocess.run(["cp", "-al", str(seed / part), str(dest / part)], check=True)
    return dest


def _toml(value) -> str:
    """Strings, lists of strings and tables of strings, as TOML (JSON's syntax is the same)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _shell_recipe(home: Path) -> Path:
    """Our recipe plus ``dash``, root by default (its lock lives beside it). ``/bin`` is a link to
    ``usr/bin`` and the base's package layer already links ``usr/bin/sh`` to dash."""
    r = obase.load_recipe(RECIPE)
    d = home / "dockerfile-recipe"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "python3.11-bookworm-shell.toml"
    text = f"""name = "python3.11-bookworm-shell"
description = "benchmark only: {r.description}, plus dash (/usr/bin/sh)"
compression = "gzip"

[debian]
mirror = {_toml(r.mirror)}
suite = {_toml(r.suite)}
components = {_toml(list(r.components))}
architectures = ["amd64", "arm64"]
packages = {_toml([*r.packages, "dash"])}
exclude = {_toml(list(r.exclude))}

[python]
version = {_toml(r.python_version)}
path = {_toml(r.python_path)}
package = {_toml(r.python_package)}

[symlinks]
{chr(10).join(f"{_toml(k)} = {_toml(v)}" for k, v in r.symlinks.items())}

[env]
{chr(10).join(f"{_toml(k)} = {_toml(v)}" for k, v in r.env.items())}

[config]
user = "0:0"
"""
    for u in r.users:
        text += f'\n[[users]]\nname = "{u.name}"\nuid = {u.uid}\nhome = "{u.home}"\n'
    for f in r.folders:
        text += f'\n[[folders]]\npath = "{f.path}"\nmode = "{f.mode:04o}"\n'
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def _pip_wheel(home: Path) -> Path:
    """The current pip wheel from PyPI (downloaded once per machine)."""
    d = home / "pip-wheel"
    have = sorted(d.glob("pip-*.whl"))
    if have:
        return have[-1]
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["--disable-pip-version-check", "-d", str(d), "pip"],
        check=True,
    )
    return sorted(d.glob("pip-*.whl"))[-1]


def build_dockerfile_base(home: Path, seed: Path) -> tuple[Path, str]:
    """The Dockerfile's base as an OCI layout (amd64 + arm64); rebuilt only when missing."""
    out = home / "dockerfile-base"
    wheel = _pip_wheel(home)
    version = wheel.name.split("-")[1]
    if (out / "index.json").is_file():
        return out, version
    recipe = obase.load_recipe(_shell_recipe(home))
    with _with_cache(seed):
        store = BlobStore(seed)
        images = []
        for plat, img in obase.build(recipe, list(PLATFORMS)).items():
            target = dataclasses.replace(
                debian_target(str(plat)), site_packages=DF_SITE, bin_dir="/usr/local/bin",
                prefix="/usr/local",
            )  # fmt: skip
            pip_layer = write_layer(install_entries(wheel, target, bytecode=True), store, "gzip")
            images.append(
                append(
                    img,
                    [pip_layer],
                    store_source(store),
                    changes=ConfigChanges(
                        env={"PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_ROOT_USER_ACTION": "ignore"},
                        user="0:0",
                    ),
                    history=[f"pip {version} (as in the official python images: /usr/local)"],
                    store=store,
                )
            )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_layout(make_index(images), tmp, "base")
    tmp.rename(out)
    return out, version


UV_WHEEL_TAGS = {"linux/amd64": "manylinux_2_17_x86_64", "linux/arm64": "manylinux_2_17_aarch64"}


def _uv_wheels(home: Path) -> dict[str, Path]:
    """The uv wheel (a static binary) for each platform, the version this ociforge runs with
    (downloaded once per machine)."""
    import importlib.metadata as md

    version = md.version("uv")
    d = home / "uv-wheels" / version
    out = {}
    for plat, tag in UV_WHEEL_TAGS.items():
        have = sorted(d.glob(f"uv-{version}-*{tag.split('_', 3)[-1]}*.whl"))
        if not have:
            d.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
                + ["--disable-pip-version-check", "--platform", tag, "-d", str(d)]
                + [f"uv=={version}"],
                check=True,
            )
            have = sorted(d.glob(f"uv-{version}-*{tag.split('_', 3)[-1]}*.whl"))
        out[plat] = have[-1]
    return out


def build_uv_base(home: Path, seed: Path, dockerfile_base: Path) -> tuple[Path, str]:
    """The uv Dockerfile's base: the Dockerfile base plus the uv binary in ``/usr/local/bin``,
    what ``COPY --from=ghcr.io/astral-sh/uv /uv /usr/local/bin/`` gives (no registry but PyPI is
    reachable here, so it comes from uv's wheel). Built once, never timed: getting uv costs the
    Dockerfile nothing in any row."""
    import importlib.metadata as md

    version = md.version("uv")
    out = home / f"dockerfile-base-uv-{version}"
    if (out / "index.json").is_file():
        return out, version
    wheels = _uv_wheels(home)
    store = BlobStore(seed)
    images = []
    index = read_layout(dockerfile_base, "base")
    with _with_cache(seed):
        for plat in PLATFORMS:
            img = index.select(plat)
            target = dataclasses.replace(
                debian_target(plat), site_packages=DF_SITE, bin_dir="/usr/local/bin",
                prefix="/usr/local",
            )  # fmt: skip
            layer = write_layer(
                install_entries(wheels[plat], target, bytecode=False), store, "gzip"
            )
            images.append(
                append(img, [layer], store_source(store), history=[f"uv {version}"], store=store)
            )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_layout(make_index(images), tmp, "base")
    tmp.rename(out)
    return out, version


def ensure(home: Path | None = None) -> Bases:
    """The bases, built if missing."""
    home = home or bench_home()
    home.mkdir(parents=True, exist_ok=True)
    seed = build_seed(home)
    df, pip_version = build_dockerfile_base(home, seed)
    read_layout(df, "base")  # readable, or fail here rather than in a timed step
    uvb, uv_version = build_uv_base(home, seed, df)
    read_layout(uvb, "base")
    return Bases(seed, df, pip_version, uvb, uv_version)


if __name__ == "__main__":
    print(ensure())
