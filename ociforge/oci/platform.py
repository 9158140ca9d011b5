"""Platforms (``linux/arm64/v8``), parsed and normalized the way containerd does.

Normalizing matters because a user writes ``x86_64`` or ``aarch64`` while an index says
``amd64``/``arm64``; comparing raw strings would miss matches and build the wrong image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidInput

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "arm": "arm",
    "i386": "386",
    "i686": "386",
    "386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64le": "mips64le",
    "loong64": "loong64",
}
_KNOWN_OS = {"linux", "windows", "darwin", "freebsd", "unknown"}
_VARIANTS = {
    "amd64": {"v1", "v2", "v3", "v4"},
    "arm64": {"v8", "v8.0", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v8.6", "v8.7", "v9"},
    "arm": {"v5", "v6", "v7", "v8"},
}
# What uname -m / Debian / wheel tags call each architecture.
_MACHINE = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7l", "386": "i686"}
_DEBIAN = {"amd64": "amd64", "arm64": "arm64", "arm": "armhf", "386": "i386"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]``; ``x86_64``→``amd64``, ``arm64/v8``≡``arm64``, ``arm``→``arm/v7``."""
        if isinstance(text, Platform):
            return text
        parts = str(text).strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidInput(
                f"unknown platform {text!r}: expected OS/ARCH[/VARIANT], like linux/arm64"
            )
        os_, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) == 3 else ""
        if os_ not in _KNOWN_OS:
            raise InvalidInput(f"unknown platform {text!r}: unknown OS {os_!r}")
        if arch not in _ARCH_ALIASES:
            raise InvalidInput(
                f"unknown platform {text!r}: unknown architecture {arch!r} "
                f"(known: {', '.join(sorted(set(_ARCH_ALIASES.values())))})"
            )
        if arch in ("armhf",) and not variant:
            variant = "v7"
        if arch == "armel" and not variant:
            variant = "v6"
        arch = _ARCH_ALIASES[arch]
        return cls(os_, arch, cls._norm_variant(arch, variant, text))

    @staticmethod
    def _norm_variant(arch: str, variant: str, text: object = None) -> str:
        if arch == "arm64" and variant in ("v8", "8"):
            return ""
        if arch == "arm" and not variant:
            return "v7"
        if arch == "amd64" and variant == "v1":
            return ""
        if variant and variant not in _VARIANTS.get(arch, {variant}):
            raise InvalidInput(f"unknown platform {text!r}: unknown variant {variant!r} for {arch}")
        return variant

    @classmethod
    def from_json(cls, obj: dict) -> Platform:
        if not isinstance(obj, dict):
            raise InvalidInput("invalid platform: not a JSON object")
        for key in ("os", "architecture", "variant", "os.version"):
            if not isinstance(obj.get(key, ""), str):
                raise InvalidInput(f"invalid platform: {key} must be a string")
        features = obj.get("os.features") or []
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise InvalidInput("invalid platform: os.features must be a list of strings")
        arch = _ARCH_ALIASES.get(obj.get("architecture", ""), obj.get("architecture", ""))
        try:
            variant = cls._norm_variant(arch, obj.get("variant", ""))
        except InvalidInput:
            variant = obj.get("variant", "")
        return cls(
            obj.get("os", ""),
            arch,
            variant,
            obj.get("os.version", ""),
            tuple(obj.get("os.features", ()) or ()),
        )

    def to_json(self) -> dict:
        out: dict = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    def matches(self, other: Platform) -> bool:
        """True when an image for ``other`` serves a request for ``self`` (os, arch, variant)."""
        return (
            self.os == other.os
            and self.architecture == other.architecture
            and (not self.variant or self.variant == other.variant)
        )

    @property
    def machine(self) -> str:
        """The ``uname -m`` / wheel-tag name of the architecture (``x86_64``, ``aarch64``)."""
        return _MACHINE.get(self.architecture, self.architecture)

    @property
    def debian_arch(self) -> str:
        return _DEBIAN.get(self.architecture, self.architecture)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platforms(values) -> list[Platform]:
    """Parse a list (or comma-separated strings) of platforms, dropping duplicates, keeping order."""
    if isinstance(values, (str, Platform)):
        values = [values]
    out: list[Platform] = []
    for v in values:
        items = v.split(",") if isinstance(v, str) else [v]
        for item in items:
            if isinstance(item, str) and not item.strip():
                continue
            p = Platform.parse(item)
            if p not in out:
                out.append(p)
    return out
