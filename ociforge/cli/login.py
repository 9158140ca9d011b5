"""``ociforge login REGISTRY``: check credentials against a registry and save them as docker does.

The file written is docker's ``config.json`` (or the ``--authfile`` given, podman's format is the
same), through a configured credential helper when there is one, so docker, podman and skopeo
read the login back. The password is taken from ``--password-stdin`` or a prompt, never echoed,
and never printed.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from ..errors import InvalidInput
from ..oci.reference import Reference, normalize_registry
from ..transports.registry import credentials
from ..transports.registry.auth import AuthError
from ..transports.registry.client import Client
from ._common import add_registry_options


def register(sub) -> None:
    p = sub.add_parser("login", help="log in to a registry and save the credentials")
    p.add_argument("registry", metavar="REGISTRY", help="host[:port], e.g. ghcr.io")
    p.add_argument("-u", "--username", help="user name (prompted for when omitted)")
    p.add_argument("-p", "--password", help="password or token (prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument(
        "--authfile",
        metavar="FILE",
        help="write here instead of $DOCKER_CONFIG/config.json or ~/.docker/config.json",
    )
    add_registry_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    registry = normalize_registry(args.registry)
    if not registry or "/" in registry:
        raise InvalidInput(f"login needs a registry host like ghcr.io, not {args.registry!r}")
    ref = Reference.parse(f"{registry}/x") if registry != "docker.io" else Reference.parse("x")
    user = args.username
    if args.password_stdin and args.password:
        raise InvalidInput("--password and --password-stdin contradict each other")
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else args.password
    if not user:
        if not sys.stdin.isatty():
            raise InvalidInput("login needs --username when stdin is not a terminal")
        user = input("Username: ").strip()
    if password is None:
        if not sys.stdin.isatty():
            raise InvalidInput("login needs --password-stdin when stdin is not a terminal")
        password = getpass.getpass("Password: ")
    if not user or not password:
        raise InvalidInput("login needs a non-empty username and password")
    cred = credentials.Credential(user, password, source="ociforge login")
    client = Client(
        ref.registry,
        api_host=ref.api_host,
        loopback=ref.is_loopback,
        insecure=args.insecure,
        ca_bundle=args.ca_bundle,
        credential=cred,
    )
    try:
        client.ping()
        if client.auth.challenge is None:
            print(f"note: {registry} asks for no authentication", file=sys.stderr)
        client.request("GET", "/v2/", what="logging in", scopes=()).close()
    except AuthError:
        raise AuthError(f"login to {registry} failed: the registry refused user {user!r}") from None
    finally:
        client.close()
    where = credentials.store(
        registry,
        client.auth.credential if client.auth.credential.identity_token else cred,
        Path(args.authfile) if args.authfile else None,
    )
    print(f"Login succeeded: {registry} (saved to {where})")
    return 0
