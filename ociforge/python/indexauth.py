"""Index URLs that carry credentials: kept off command lines and out of messages.

``--index-url https://user:token@host/simple`` on uv's or pip's command line is visible to every
user of the machine (``ps``, ``/proc/PID/cmdline``). :func:`split_index_args` moves each index
option whose values carry credentials into the tool's environment instead (uv: ``UV_INDEX_URL``,
``UV_EXTRA_INDEX_URL`` space-separated, ``UV_FIND_LINKS`` comma-separated; pip: ``PIP_INDEX_URL``,
``PIP_EXTRA_INDEX_URL``, ``PIP_FIND_LINKS``, space-separated). An option goes whole, since a tool
reads an option from its environment only when the command line does not give it.

:func:`redact_url` and :func:`redact_text` hide what sits before ``@`` in a URL, the user part as
well as the password (``https://__token__@host``, ``https://TOKEN@host`` and
``https://user:pass@host`` all carry a secret there), and a URL's query.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

from ..errors import InvalidInput

# option -> (environment variable, separator of several values; None: one value)
_ENV = {
    "uv": {
        "--index-url": ("UV_INDEX_URL", None),
        "--extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
        "--find-links": ("UV_FIND_LINKS", ","),
    },
    "pip": {
        "--index-url": ("PIP_INDEX_URL", None),
        "--extra-index-url": ("PIP_EXTRA_INDEX_URL", " "),
        "--find-links": ("PIP_FIND_LINKS", " "),
    },
}
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s@]+@")
MIN_BARE_TOKEN = 8  # a user-part token shorter than this is not hidden outside URLs


def has_credentials(url: str) -> bool:
    """True when ``url`` has a user part (with or without a password)."""
    return "@" in urllib.parse.urlsplit(url).netloc


def split_index_args(args: Iterable[str], tool: str) -> tuple[list[str], dict[str, str]]:
    """Index options as (command-line arguments, environment) for ``tool`` (``uv`` or ``pip``).

    Options with no credentials in any value stay on the command line, in their order; the others
    go to the environment. Other arguments pass through untouched.
    """
    names = _ENV[tool]
    args = list(args)
    out: list[str] = []
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        a = args[i]
        opt, eq, val = a.partition("=")
        if a in names and i + 1 < len(args):
            values.setdefault(a, []).append(args[i + 1])
            i += 2
            continue
        if eq and opt in names:
            values.setdefault(opt, []).append(val)
        else:
            out.append(a)
        i += 1
    env: dict[str, str] = {}
    for opt, vals in values.items():
        var, sep = names[opt]
        if not any(has_credentials(v) for v in vals):
            for v in vals:
                out += [opt, v]
        elif sep is None:
            env[var] = vals[-1]  # the last one wins, as on a command line
        else:
            if any(sep in v for v in vals):
                raise InvalidInput(
                    f"cannot hand {tool} the {opt} values through {var}: one holds {sep!r}, "
                    f"its separator ({', '.join(redact_url(v) for v in vals)})"
                )
            env[var] = sep.join(vals)
    return out, env


def redact_url(url: str) -> str:
    """``url`` for a message or a log: its user part and password (``****``) and query hidden."""
    p = urllib.parse.urlsplit(url)
    netloc = p.netloc
    if "@" in netloc:
        netloc = "****@" + netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "****" if p.query else "", ""))


def redact_text(text: str, credentials: Iterable[tuple[str, str]] = ()) -> str:
    """``text`` (a tool's output) with the user part of every URL hidden, and the given secrets
    (passwords; a user name that has no password is itself the token) wherever they appear."""
    text = _USERINFO.sub(r"\1****@", text)
    for user, password in credentials:
        secrets = [password] if password else [user] if len(user) >= MIN_BARE_TOKEN else []
        for secret in secrets:
            for form in {secret, urllib.parse.quote(secret, safe="")}:
                text = text.replace(form, "****")
    return text
