"""Image references (``registry/repo:tag@sha256:...``), parsed and normalized as Docker does.

Users write ``python:3.11``, ``ghcr.io/org/model@sha256:...`` or ``localhost:5000/m``; every part of
ociforge must agree on what registry, repository and tag those mean, or a push lands somewhere the
user did not expect. The grammar is distribution's ``reference`` package: a first component with a
``.`` or ``:`` (or ``localhost``) is a registry, else the registry is Docker Hub, where one-part
names live under ``library/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import InvalidInput
from .digest import validate

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
DEFAULT_TAG = "latest"

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_HOST = re.compile(
    r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$"
)
_LOOPBACK = {"localhost", "127.0.0.1", "[::1]"}


@dataclass(frozen=True)
class Reference:
    """A parsed reference; ``tag`` and ``digest`` may both be set (the digest wins on pull)."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``[REGISTRY/]REPO[:TAG][@DIGEST]``; a bare name gets ``:latest``."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("empty image reference")
        raw = text.strip()
        if raw.startswith("docker://"):
            raw = raw[len("docker://") :]
            raw = raw.lstrip("/")
        name, digest = raw, ""
        if "@" in name:
            name, _, digest = name.partition("@")
            if not digest.startswith("sha256:"):
                raise InvalidInput(
                    f"invalid image reference {text!r}: digest {digest!r} must be sha256:<64 hex>"
                )
            try:
                validate(digest)
            except InvalidInput:
                raise InvalidInput(
                    f"invalid image reference {text!r}: digest {digest!r} must be sha256:<64 hex>"
                ) from None
        tag = ""
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
            if not _TAG.match(tag):
                raise InvalidInput(
                    f"invalid image reference {text!r}: tag {tag!r} must be 1-128 of "
                    "letters, digits, '_', '.' and '-', not starting with '.' or '-'"
                )
        registry, _, rest = name.partition("/")
        if not rest or not ("." in registry or ":" in registry or registry == "localhost"):
            registry, rest = DOCKER_HUB, name
        elif not _HOST.match(registry):
            raise InvalidInput(f"invalid image reference {text!r}: bad registry host {registry!r}")
        if registry.lower() in _HUB_ALIASES:
            registry = DOCKER_HUB
        if not rest:
            raise InvalidInput(f"invalid image reference {text!r}: no repository name")
        for comp in rest.split("/"):
            if not _COMPONENT.match(comp):
                why = "must be lowercase" if comp.lower() != comp else "has invalid characters"
                raise InvalidInput(
                    f"invalid image reference {text!r}: repository component {comp!r} {why} "
                    "(lowercase letters, digits, and single '.', '_', '__' or '-' between them)"
                )
        if registry == DOCKER_HUB and "/" not in rest:
            rest = "library/" + rest
        if len(rest) > 255:
            raise InvalidInput(f"invalid image reference {text!r}: repository name over 255 chars")
        if not tag and not digest:
            tag = DEFAULT_TAG
        return cls(registry, rest, tag, digest)

    @property
    def api_host(self) -> str:
        """The host the API is served from (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def hostname(self) -> str:
        """The registry without its port (``[::1]`` keeps its brackets)."""
        host = self.registry
        if host.startswith("["):
            return host[: host.index("]") + 1]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def is_loopback(self) -> bool:
        """True for ``localhost``, ``127.0.0.1`` and ``[::1]``: plain HTTP is allowed there."""
        return self.hostname.lower() in _LOOPBACK

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when there is one, else the tag."""
        return self.digest or self.tag

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest="")

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=validate(digest))

    def in_repository(self, repository: str) -> Reference:
        return replace(self, repository=repository)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def parse(text: str | Reference) -> Reference:
    return text if isinstance(text, Reference) else Reference.parse(text)


def normalize_registry(host: str) -> str:
    """The key a registry host is known by in credential files (Docker Hub has several names)."""
    h = host.strip()
    for prefix in ("https://", "http://"):
        if h.startswith(prefix):
            h = h[len(prefix) :]
    h = h.split("/", 1)[0]
    return DOCKER_HUB if h.lower() in _HUB_ALIASES else h
