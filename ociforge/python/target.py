"""What a Python dependency set is resolved *for*: the image's platform, interpreter, libc, variant.

Everything here is computed from the target's parameters, never from the host: an x86_64 laptop
resolving for ``linux/arm64`` must get aarch64 wheel tags and ``platform_machine == "aarch64"``
markers. The values come from the base image (its labels record the Python version, interpreter
path and glibc level; Debian 12 is CPython 3.11 / glibc 2.36, Debian 13 is CPython 3.13 / 2.41).

Wheel tags use PyPA's ``packaging.tags`` with an explicit platform list: every
``manylinux_2_N`` from the base's glibc level down to the oldest one defined for the architecture
(plus the legacy ``manylinux2014``/``2010``/``1`` aliases), or ``musllinux_1_N`` for musl. Plain
``linux_*`` tags are left out on purpose: such wheels were built for one unknown machine.

The variant (``cpu``, or CUDA as ``cu121`` / ``cu12``) does not change wheel tags (PyPI has no
CUDA tag); :mod:`ociforge.python.resolve` uses it to steer and check which builds are picked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging import tags
from packaging.utils import parse_wheel_filename

from ..errors import InvalidInput
from ..oci.platform import Platform

DEFAULT_SITE_PACKAGES = "/opt/ociforge/site-packages"
DEFAULT_BIN_DIR = "/opt/ociforge/bin"
DEFAULT_PREFIX = "/opt/ociforge"

_IMPLEMENTATIONS = {"cp": ("cpython", "CPython"), "pp": ("pypy", "PyPy")}
_IMPL_ALIASES = {"cp": "cp", "cpython": "cp", "pp": "pp", "pypy": "pp"}
# Oldest manylinux glibc minor per architecture (PEP 600 defines 2_5 for x86_64, 2_17 for aarch64).
_OLDEST_GLIBC = {"x86_64": 5, "aarch64": 17, "i686": 5, "ppc64le": 17, "s390x": 17, "armv7l": 17}
_LEGACY = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
_VARIANT_RE = re.compile(r"^(cpu|cu(\d{2,3}))$")


def parse_version(text: str) -> tuple[int, ...]:
    parts = str(text).strip().split(".")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise InvalidInput(f"invalid Python version {text!r}: expected like 3.11 or 3.11.2")
    return tuple(int(p) for p in parts)


def parse_libc(text: str) -> tuple[str, tuple[int, int]]:
    """``glibc 2.36``, ``glibc-2.36``, ``manylinux_2_36``, ``musl 1.2`` → (``glibc``, (2, 36))."""
    raw = str(text).strip().lower()
    m = re.fullmatch(r"(glibc|musl|manylinux|musllinux)[ _\-]?(\d+)[._](\d+)", raw)
    if not m:
        raise InvalidInput(
            f"invalid libc {text!r}: expected like 'glibc 2.36', 'manylinux_2_36' or 'musl 1.2'"
        )
    kind = {"manylinux": "glibc", "musllinux": "musl"}.get(m.group(1), m.group(1))
    return kind, (int(m.group(2)), int(m.group(3)))


def parse_variant(text: str) -> str:
    """``cpu`` or ``cuXY[Z]`` (``cu121``: CUDA 12.1; ``cu12``: any CUDA 12)."""
    v = str(text).strip().lower().replace(".", "")
    if not _VARIANT_RE.match(v):
        raise InvalidInput(
            f"invalid variant {text!r}: expected 'cpu' or a CUDA version like 'cu121'"
        )
    return v


@dataclass(frozen=True)
class Target:
    """One image's Python environment. Hashable: locks are keyed by it.

    ``python`` is ``3.11`` or a full ``3.11.2`` (used for ``python_full_version`` markers; when
    only major.minor is known, ``.0`` is assumed). ``interpreter`` is the image's Python, written
    into console-script shebangs; ``site_packages``/``bin_dir``/``prefix`` are where wheels land.
    """

    platform: Platform
    python: str = "3.11"
    implementation: str = "cp"
    libc: str = "glibc"
    libc_version: tuple[int, int] = (2, 36)
    variant: str = "cpu"
    interpreter: str = "/usr/bin/python3.11"
    site_packages: str = DEFAULT_SITE_PACKAGES
    bin_dir: str = DEFAULT_BIN_DIR
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def make(
        cls,
        platform: str | Platform,
        python: str = "3.11",
        libc: str = "glibc 2.36",
        variant: str = "cpu",
        implementation: str = "cp",
        interpreter: str | None = None,
        **paths: str,
    ) -> Target:
        """Build and validate a target from user-facing strings."""
        plat = Platform.parse(platform)
        if plat.os != "linux":
            raise InvalidInput(f"target platform {plat}: only linux images hold Python wheels")
        ver = parse_version(python)
        impl = _IMPL_ALIASES.get(str(implementation).lower())
        if impl is None:
            raise InvalidInput(f"unknown Python implementation {implementation!r} (cp or pp)")
        kind, lv = parse_libc(libc)
        if interpreter is None:
            interpreter = f"/usr/bin/python{ver[0]}.{ver[1]}"
        if not interpreter.startswith("/"):
            raise InvalidInput(f"interpreter path {interpreter!r} must be absolute (in the image)")
        for name, value in paths.items():
            if name not in ("site_packages", "bin_dir", "prefix"):
                raise InvalidInput(f"unknown target path {name!r}")
            if not str(value).startswith("/"):
                raise InvalidInput(f"{name} {value!r} must be an absolute path in the image")
        return cls(
            plat,
            ".".join(map(str, ver)),
            impl,
            kind,
            lv,
            parse_variant(variant),
            interpreter,
            **paths,
        )

    # -- identity -------------------------------------------------------------------------------

    @property
    def version_tuple(self) -> tuple[int, int]:
        v = parse_version(self.python)
        return (v[0], v[1])

    @property
    def py_nodot(self) -> str:
        return "".join(map(str, self.version_tuple))

    @property
    def machine(self) -> str:
        return self.platform.machine

    @property
    def cuda(self) -> tuple[int, int | None] | None:
        """(major, minor or None) for a CUDA variant, None for ``cpu``."""
        if self.variant == "cpu":
            return None
        digits = self.variant[2:]
        return (int(digits[:2]), int(digits[2:]) if len(digits) > 2 else None)

    @property
    def key(self) -> str:
        """A stable, readable name: ``linux/arm64 cp311 glibc_2_36 cpu`` (lock file keys)."""
        return (
            f"{self.platform} {self.implementation}{self.py_nodot} "
            f"{self.libc}_{self.libc_version[0]}_{self.libc_version[1]} {self.variant}"
        )

    def __str__(self) -> str:
        return self.key

    # -- wheel tags -----------------------------------------------------------------------------

    def platform_tags(self) -> list[str]:
        """Most specific first: ``manylinux_2_36_aarch64`` … ``manylinux_2_17_aarch64``, aliases."""
        arch = self.machine
        major, minor = self.libc_version
        out: list[str] = []
        if self.libc == "musl":
            for m in range(minor, -1, -1):
                out.append(f"musllinux_{major}_{m}_{arch}")
            return out
        oldest = _OLDEST_GLIBC.get(arch, 17)
        for m in range(minor, oldest - 1, -1):
            out.append(f"manylinux_{major}_{m}_{arch}")
            legacy = _LEGACY.get((major, m))
            if legacy:
                out.append(f"{legacy}_{arch}")
        return out

    def abi(self) -> str:
        return f"{self.implementation}{self.py_nodot}"

    def tags(self) -> list[tags.Tag]:
        """All wheel tags this target accepts, in ``packaging``'s priority order."""
        plats = self.platform_tags()
        ver = self.version_tuple
        if self.implementation == "cp":
            out = list(tags.cpython_tags(ver, abis=[self.abi()], platforms=plats))
        else:
            out = list(tags.generic_tags(f"pp{self.py_nodot}", abis=[self.abi()], platforms=plats))
        out += list(tags.compatible_tags(ver, interpreter=self.abi(), platforms=plats))
        return out

    def supports(self, wheel_filename: str) -> bool:
        """True when a wheel file's tags include one this target accepts."""
        try:
            _, _, _, wtags = parse_wheel_filename(wheel_filename)
        except Exception:
            return False
        return not wtags.isdisjoint(self.tag_set())

    def tag_set(self) -> frozenset[tags.Tag]:
        return frozenset(self.tags())

    # -- markers --------------------------------------------------------------------------------

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker values for the target (not the host)."""
        name, pyimpl = _IMPLEMENTATIONS[self.implementation]
        full = parse_version(self.python)
        full_s = ".".join(map(str, full + (0,) * (3 - len(full))))
        major_minor = ".".join(map(str, self.version_tuple))
        return {
            "implementation_name": name,
            "implementation_version": full_s,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": pyimpl,
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": full_s,
            "python_version": major_minor,
            "sys_platform": "linux",
        }

    def to_json(self) -> dict:
        return {
            "platform": str(self.platform),
            "python": self.python,
            "implementation": self.implementation,
            "libc": f"{self.libc} {self.libc_version[0]}.{self.libc_version[1]}",
            "variant": self.variant,
            "interpreter": self.interpreter,
            "site_packages": self.site_packages,
            "bin_dir": self.bin_dir,
            "prefix": self.prefix,
        }

    @classmethod
    def from_json(cls, obj: dict) -> Target:
        return cls.make(
            obj["platform"],
            obj.get("python", "3.11"),
            obj.get("libc", "glibc 2.36"),
            obj.get("variant", "cpu"),
            obj.get("implementation", "cp"),
            obj.get("interpreter"),
            **{k: obj[k] for k in ("site_packages", "bin_dir", "prefix") if k in obj},
        )


# What the Debian bases record (see ociforge.bases.base); handy defaults for the CLI and tests.
DEBIAN = {
    "bookworm": {"python": "3.11", "libc": "glibc 2.36", "interpreter": "/usr/bin/python3.11"},
    "trixie": {"python": "3.13", "libc": "glibc 2.41", "interpreter": "/usr/bin/python3.13"},
}


def debian_target(
    platform: str | Platform, release: str = "bookworm", variant: str = "cpu"
) -> Target:
    """The target for a Debian base (``bookworm``: CPython 3.11, glibc 2.36)."""
    if release not in DEBIAN:
        raise InvalidInput(f"unknown Debian release {release!r} (known: {', '.join(DEBIAN)})")
    d = DEBIAN[release]
    return Target.make(platform, d["python"], d["libc"], variant, interpreter=d["interpreter"])
