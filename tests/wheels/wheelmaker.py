"""Build tiny, valid wheels for tests (no network, no build backend)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _rec(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(
    directory: Path,
    name: str,
    version: str = "1.0",
    tag: str = "py3-none-any",
    requires: tuple[str, ...] = (),
    files: dict[str, bytes] | None = None,
    scripts: dict[str, str] | None = None,
    data_scripts: dict[str, bytes] | None = None,
) -> Path:
    """A wheel ``name-version-tag.whl`` with a module ``name`` and the given extras."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    contents = {f"{dist}/__init__.py": f"VALUE = {name!r}\n".encode()}
    contents.update(files or {})
    for sname, body in (data_scripts or {}).items():
        contents[f"{dist}-{version}.data/scripts/{sname}"] = body
    contents[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    contents[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {'true' if tag.endswith('any') else 'false'}\nTag: {tag}\n"
    ).encode()
    if scripts:
        eps = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())
        contents[f"{info}/entry_points.txt"] = eps.encode()
    record = [_rec(p, d) for p, d in contents.items()] + [f"{info}/RECORD,,"]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p, d in contents.items():
            zi = zipfile.ZipInfo(p, (2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o755 if "scripts/" in p else 0o644) << 16
            zf.writestr(zi, d)
        zf.writestr(
            zipfile.ZipInfo(f"{info}/RECORD", (2020, 1, 1, 0, 0, 0)), "\n".join(record) + "\n"
        )
    return path
