"""Index URLs with credentials stay off uv's and pip's command lines (``ps`` shows those to every
user of the machine) and out of messages: they go through the tools' environment instead."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile

import pytest

from ociforge.python import resolve as resolve_mod
from ociforge.python.indexauth import redact_text, redact_url, split_index_args
from ociforge.python.resolve import IndexSettings, ResolveOptions, resolve_one
from ociforge.python.sdist import pip_command
from ociforge.python.target import Target
from tests.registry.hostile import Reply, Server

SECRETS = ("s3cr3t-pw", "pypi-AgEIcHlwaS5vcmc", "ghp_0123456789abcdef", "linkuser:linkpw")


def _settings() -> IndexSettings:
    return IndexSettings(
        index_url="https://alice:s3cr3t-pw@idx.example/simple",
        extra_index_urls=[
            "https://__token__:pypi-AgEIcHlwaS5vcmc@extra.example/simple",
            "https://ghp_0123456789abcdef@git.example/simple",
            "https://plain.example/simple",
        ],
        find_links=["https://linkuser:linkpw@links.example/"],
    )


def _no_secret(words) -> None:
    text = " ".join(words)
    for s in SECRETS:
        assert s not in text, s


def test_uv_command_line_has_no_credentials(tmp_path):
    s = _settings()
    reqs = tmp_path / "r.in"
    reqs.write_text("a\n")
    args = resolve_mod._uv_args(Target.make("linux/amd64"), reqs, s, ResolveOptions(), [], tmp_path)
    _no_secret(args)
    env = resolve_mod._uv_env(s)
    assert env["UV_INDEX_URL"] == s.index_url
    assert env["UV_EXTRA_INDEX_URL"].split(" ") == s.extra_index_urls
    assert env["UV_FIND_LINKS"] == s.find_links[0]
    assert "--index-url" not in args and "--extra-index-url" not in args


def test_options_without_credentials_stay_on_the_command_line():
    s = IndexSettings("https://pypi.org/simple", ["https://x.example/simple"], ["/srv/wheels"])
    args, env = split_index_args(s.uv_args(), "uv")
    assert args == s.uv_args() and env == {}


def test_pip_command_line_has_no_credentials(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://elsewhere.example/simple")  # not inherited
    cmd, env = pip_command(["wheel", "--no-deps"], _settings().uv_args())
    _no_secret(cmd)
    assert env["PIP_INDEX_URL"] == _settings().index_url
    assert env["PIP_FIND_LINKS"] == "https://linkuser:linkpw@links.example/"
    assert "--isolated" not in cmd and env["PIP_CONFIG_FILE"]


def test_redaction_hides_the_user_part_and_the_password():
    assert redact_url("https://__token__@host.example/simple") == "https://****@host.example/simple"
    assert redact_url("https://user:pass@host.example:8443/s?t=x") == (
        "https://****@host.example:8443/s?****"
    )
    assert redact_url("https://host.example/simple") == "https://host.example/simple"
    creds = _settings().credentials().values()
    out = redact_text(
        "GET https://ghp_0123456789abcdef@git.example/simple/a/ failed; token ghp_0123456789abcdef;"
        " https://alice:s3cr3t-pw@idx.example/simple: 401; password s3cr3t-pw",
        creds,
    )
    _no_secret([out])
    assert "git.example" in out and "idx.example" in out


def _wheel_bytes(name: str, version: str) -> bytes:
    buf = io.BytesIO()
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(buf, "w") as zf:
        for p, data in {**files, f"{dist}/RECORD": record.encode()}.items():
            zf.writestr(p, data)
    return buf.getvalue()


def test_uv_gets_the_credentials_through_its_environment(monkeypatch):
    """A real uv against a password-protected simple index on loopback: the resolution works,
    the index sees the credentials, and no command line that ran held them."""
    whl = _wheel_bytes("credpkg", "1.0")
    sha = hashlib.sha256(whl).hexdigest()
    good = "Basic " + base64.b64encode(b"alice:idx-s3cr3t-pw").decode()

    def route(req):
        if req.headers.get("Authorization") != good:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="idx"'})
        if req.path.rstrip("/") == "/simple/credpkg":
            link = f'<a href="/files/credpkg-1.0-py3-none-any.whl#sha256={sha}">x</a>'
            return Reply(200, {"Content-Type": "text/html"}, link.encode())
        if req.path.startswith("/files/"):
            return Reply(200, {"Content-Type": "application/octet-stream"}, whl)
        return Reply(404)

    ran: list[list[str]] = []
    real_run, real_popen = resolve_mod.subprocess.run, resolve_mod.subprocess.Popen

    def run(args, *a, **kw):
        ran.append(list(args))
        return real_run(args, *a, **kw)

    def popen(args, *a, **kw):
        ran.append(list(args))
        return real_popen(args, *a, **kw)

    monkeypatch.setattr(resolve_mod.subprocess, "run", run)
    monkeypatch.setattr(resolve_mod.subprocess, "Popen", popen)
    with Server(route) as srv:
        url = f"http://alice:idx-s3cr3t-pw@{srv.host}/simple"
        opts = ResolveOptions(index=IndexSettings(index_url=url), use_pip_config=False)
        lock = resolve_one(["credpkg==1.0"], Target.make("linux/amd64"), opts)
    assert [p.name for p in lock.packages] == ["credpkg"]
    assert "idx-s3cr3t-pw" not in lock.packages[0].url
    assert any(s.headers.get("Authorization") == good for s in srv.seen)
    assert ran and all("idx-s3cr3t-pw" not in " ".join(a) for a in ran)


def test_a_find_links_value_with_the_separator_is_refused():
    with pytest.raises(Exception, match="separator") as e:
        split_index_args(["--find-links", "https://u:pw@h/a,b"], "uv")
    assert "pw" not in str(e.value)
