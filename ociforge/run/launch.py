"""What an image's config says to run, read against its unpacked tree: the command (entrypoint +
cmd), the environment, the user and the working folder, as a container engine reads them.

* the command is ``Entrypoint + Cmd``; a command given here replaces ``Cmd``; a bare name
  (``python3``) is looked up on the image's ``PATH`` inside the tree, since qemu-user takes a
  path;
* the environment is the image's ``Env`` (``PATH`` set when it has none, ``HOME`` from the user's
  passwd entry when it has none), then what the caller adds;
* ``User`` is ``uid``, ``uid:gid``, ``name`` or ``name:group``: names are looked up in the
  image's own ``/etc/passwd`` and ``/etc/group`` (read inside the tree, never through a link out
  of it); a uid with no group takes the passwd entry's group, else 0, as Docker does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InvalidInput
from .rootfs import read_inside
from .sandbox import DEFAULT_PATH, Sandbox


def _table(root: Path, path: str) -> list[list[str]]:
    raw = read_inside(root, path)
    if raw is None:
        return []
    return [
        line.split(":")
        for line in raw.decode("utf-8", errors="replace").splitlines()
        if line and not line.startswith("#")
    ]


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) < 2**32 - 1 else None


def user_ids(root: Path, user: str) -> tuple[int, int, str]:
    """``(uid, gid, home)`` for the config's ``User`` in the tree ``root``."""
    name, _, group = (user or "0").partition(":")
    passwd = [e for e in _table(root, "etc/passwd") if len(e) >= 6]
    uid = _number(name)
    if uid is None:
        entry = next((e for e in passwd if e[0] == name), None)
        if entry is None or _number(entry[2]) is None:
            raise InvalidInput(f"the image's user {name!r} is not in its /etc/passwd")
        uid = int(entry[2])
    else:
        entry = next((e for e in passwd if _number(e[2]) == uid), None)
    if group:
        gid = _number(group)
        if gid is None:
            found = next(
                (e for e in _table(root, "etc/group") if len(e) >= 3 and e[0] == group), None
            )
            if found is None or _number(found[2]) is None:
                raise InvalidInput(f"the image's group {group!r} is not in its /etc/group")
            gid = int(found[2])
    else:
        gid = _number(entry[3]) if entry is not None and _number(entry[3]) is not None else 0
    home = entry[5] if entry is not None and entry[5] else "/"
    return uid, gid, home  # type: ignore[return-value]


def _on_path(root: Path, name: str, path: str) -> str:
    """``name`` as a path inside the tree: itself when it holds a ``/``, else the first match on
    the image's ``PATH`` (checked inside the tree; a link is fine, it resolves in the sandbox)."""
    if "/" in name:
        return name
    for folder in path.split(":"):
        if not folder.startswith("/"):
            continue
        candidate = f"{folder.rstrip('/')}/{name}"
        if read_inside(root, candidate, limit=4) is not None:
            return candidate
    raise InvalidInput(f"{name!r} is not found on the image's PATH ({path})")


def from_image(
    image,
    root: Path,
    *,
    command: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    **sandbox: object,
) -> Sandbox:
    """The :class:`Sandbox` that runs ``image``'s entrypoint in its tree ``root``.

    ``command`` replaces the image's ``Cmd``; ``entrypoint`` its ``Entrypoint`` (and its
    ``Cmd``, as Docker does); ``env`` is added to its ``Env``; ``user`` replaces its ``User``;
    ``sandbox`` are :class:`Sandbox`'s other fields (``share_net``, ``read_only``, ``binds``).
    """
    cfg = image.config.config
    if entrypoint is not None:
        argv = [*entrypoint, *(command or ())]
    else:
        argv = list(cfg.entrypoint or ()) + list(command if command else (cfg.cmd or ()))
    if not argv:
        raise InvalidInput(f"image {image.digest} has no Entrypoint or Cmd: give a command to run")
    full_env = cfg.env_dict()
    full_env.setdefault("PATH", DEFAULT_PATH)
    uid, gid, home = user_ids(root, cfg.user if user is None else user)
    full_env.setdefault("HOME", home)
    full_env.update(env or {})
    argv[0] = _on_path(root, argv[0], full_env["PATH"])
    return Sandbox(
        rootfs=root,
        argv=argv,
        platform=image.platform,
        uid=uid,
        gid=gid,
        env=full_env,
        cwd=cfg.working_dir or "/",
        **sandbox,  # type: ignore[arg-type]
    )


def port_env(port: str | None) -> dict[str, str]:
    """``-p``: the sandbox shares the host's network, so a port cannot be mapped to another;
    ``PORT`` tells the server which host port to listen on (ociforge's runtime, and servers
    made for Cloud Run or Heroku, read it). ``N`` or ``N:N``."""
    if port is None:
        return {}
    host, sep, inside = port.partition(":")
    if not host.isdigit() or not 0 < int(host) < 65536 or (sep and inside != host):
        raise InvalidInput(
            f"-p {port}: give one port, N (or N:N): the image shares the host's network, so the "
            f"server listens on the host's port N itself (PORT=N is set for it); it cannot be "
            f"mapped to another"
        )
    return {"PORT": str(int(host))}
