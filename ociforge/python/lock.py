"""Lock files: exactly which wheel, from where, with which sha256, for each target.

A lock is what makes a build repeatable and offline: ``ociforge lock`` writes it once (resolution
needs the indexes), ``build`` reuses it and, with a warm wheel cache, touches no network. The file
is JSON with sorted keys and two-space indent, so it is readable, diffs well, and is byte-for-byte
identical when the same inputs resolve to the same wheels (no timestamps, no host paths).

Shape::

    {"lock-version": 1,
     "targets": [{"target": {platform, python, implementation, libc, variant, interpreter, ...},
                  "requirements": ["scikit-learn==1.5.2"],
                  "packages": [{"name", "version", "filename", "url", "sha256", "size",
                                "requested_by": ["scikit-learn"]}, ...]}]}

URLs never carry credentials: they are stripped when a lock is made and found again from the
user's index settings when wheels are fetched.

A wheel ociforge built from an sdist (a package that publishes none) also records that sdist's
hash, ``"sdist_sha256"``; building the wheel again from the lock refuses an sdist that no longer
matches it. The key is left out for every other wheel, and a lock without it reads as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from ..errors import InvalidInput, NotFound
from ..fsutil import atomic_write
from .target import Target

LOCK_VERSION = 1


@dataclass(frozen=True)
class LockedWheel:
    """One wheel of a lock. ``requested_by`` names the requirements that pulled it in
    (``<requirements>`` for a top-level requirement)."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int | None = None
    requested_by: tuple[str, ...] = ()
    sdist_sha256: str | None = None  # the sdist a wheel built here came from (see the module)

    @property
    def pure(self) -> bool:
        """A wheel that is the same on every platform (all tags ``*-none-any``)."""
        _, _, _, wtags = parse_wheel_filename(self.filename)
        return all(t.platform == "any" and t.abi == "none" for t in wtags)

    @property
    def key(self) -> str:
        return canonicalize_name(self.name)

    def to_json(self) -> dict:
        out = {
            "name": self.name,
            "version": self.version,
            "filename": self.filename,
            "url": self.url,
            "sha256": self.sha256,
            "size": self.size,
            "requested_by": list(self.requested_by),
        }
        if self.sdist_sha256:
            out["sdist_sha256"] = self.sdist_sha256
        return out

    @classmethod
    def from_json(cls, obj: dict, where: str = "lock") -> LockedWheel:
        try:
            sha = str(obj["sha256"]).lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise InvalidInput(f"{where}: package {obj.get('name')!r}: invalid sha256 {sha!r}")
            sdist = obj.get("sdist_sha256")
            if sdist is not None:
                sdist = str(sdist).lower()
                if len(sdist) != 64 or any(c not in "0123456789abcdef" for c in sdist):
                    raise InvalidInput(
                        f"{where}: package {obj.get('name')!r}: invalid sdist_sha256 {sdist!r}"
                    )
            return cls(
                str(obj["name"]),
                str(obj["version"]),
                str(obj["filename"]),
                str(obj["url"]),
                sha,
                None if obj.get("size") is None else int(obj["size"]),
                tuple(obj.get("requested_by", ())),
                sdist,
            )
        except KeyError as e:
            raise InvalidInput(f"{where}: a package entry lacks {e.args[0]!r}") from None


@dataclass
class Lock:
    """The wheels for one target, sorted by normalized name."""

    target: Target
    packages: list[LockedWheel] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.packages = sorted(self.packages, key=lambda p: p.key)

    @property
    def total_size(self) -> int:
        return sum(p.size or 0 for p in self.packages)

    def get(self, name: str) -> LockedWheel:
        key = canonicalize_name(name)
        for p in self.packages:
            if p.key == key:
                return p
        raise NotFound(f"{name!r} is not in the lock for {self.target}")

    def names(self) -> list[str]:
        return [p.key for p in self.packages]

    def to_json(self) -> dict:
        return {
            "target": self.target.to_json(),
            "requirements": list(self.requirements),
            "packages": [p.to_json() for p in self.packages],
        }

    @classmethod
    def from_json(cls, obj: dict, where: str = "lock") -> Lock:
        try:
            target = Target.from_json(obj["target"])
        except KeyError as e:
            raise InvalidInput(f"{where}: a target lacks {e.args[0]!r}") from None
        pkgs = [LockedWheel.from_json(p, f"{where} ({target})") for p in obj.get("packages", [])]
        return cls(target, pkgs, list(obj.get("requirements", [])))


def dumps(locks: dict[Target, Lock] | list[Lock], extra: dict | None = None) -> str:
    """The lock file's text. ``extra``: more top-level sections, JSON-ready, written as given
    (the system packages of ``ociforge.bases.syspackages``); readers of the wheels skip them."""
    items = list(locks.values()) if isinstance(locks, dict) else list(locks)
    items.sort(key=lambda lk: lk.target.key)
    doc = {"lock-version": LOCK_VERSION, "targets": [lk.to_json() for lk in items]}
    doc |= {k: v for k, v in (extra or {}).items() if k not in doc}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def loads(text: str, where: str = "lock") -> dict[Target, Lock]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{where}: not a valid lock file ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("lock-version") != LOCK_VERSION:
        raise InvalidInput(f"{where}: not an ociforge lock (lock-version {LOCK_VERSION} expected)")
    out: dict[Target, Lock] = {}
    for obj in doc.get("targets", []):
        lk = Lock.from_json(obj, where)
        out[lk.target] = lk
    return out


def write_lockfile(
    path: str | os.PathLike, locks: dict[Target, Lock] | list[Lock], extra: dict | None = None
) -> Path:
    """Write atomically: a reader sees the old lock or the new one, never half of one."""
    path = Path(path)
    atomic_write(path, dumps(locks, extra))
    return path


def read_lockfile(path: str | os.PathLike) -> dict[Target, Lock]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"lock file {path} does not exist (run 'ociforge lock' first)") from None
    return loads(text, str(path))


def find_lock(locks: dict[Target, Lock], target: Target, any_variant: bool = False) -> Lock:
    """The lock for ``target``; a clear error listing what the file holds otherwise.

    ``any_variant`` (no variant was named): failing an entry of ``target``'s own variant, the one
    entry of another variant for the same platform, Python and libc (what the resolution took)."""
    if target in locks:
        return locks[target]
    for t, lk in locks.items():  # paths/interpreter do not change which wheels are picked
        if t.key == target.key:
            return lk
    if any_variant:
        others = [
            lk for t, lk in locks.items() if replace(t, variant=target.variant).key == target.key
        ]
        if len(others) == 1:
            return others[0]
    have = ", ".join(t.key for t in locks) or "nothing"
    raise NotFound(f"the lock has no entry for target {target.key} (it has: {have})")
