"""Credentials are found where docker, podman and skopeo keep them, in docker's precedence."""

import base64
import json
import os
import stat

import pytest

from ociforge.transports.registry import credentials as creds


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _helper(tmp_path, monkeypatch, name="fake", secret="helper-pw", user="hu"):
    """A real docker-credential-NAME executable on PATH that answers 'get' for one registry."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.log"
    script = bindir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        f'read input; echo "$1 $input" >> {log}\n'
        'case "$1" in\n'
        f'  get) case "$input" in reg.example.com|https://index.docker.io/v1/) '
        f'echo \'{{"ServerURL":"x","Username":"{user}","Secret":"{secret}"}}\';; '
        '*) echo "credentials not found in native keychain"; exit 1;; esac;;\n'
        "  store|erase) exit 0;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def test_nothing_found(no_credentials):
    assert creds.find("reg.example.com") is None


def test_docker_auths_and_hub_key(no_credentials):
    _write(
        no_credentials / ".docker/config.json",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpw")},
                "https://reg.example.com": {"auth": _b64("u:p:with:colons")},
            }
        },
    )
    hub = creds.find("docker.io")
    assert (hub.username, hub.password) == ("hubuser", "hubpw")
    c = creds.find("reg.example.com")
    assert (c.username, c.password) == ("u", "p:with:colons")
    assert "~/.docker/config.json" in c.source
    assert "p:with:colons" not in repr(c) and "p:with:colons" not in str(c)


def test_docker_config_env_and_identity_token(no_credentials, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    _write(
        tmp_path / "dc/config.json",
        {"auths": {"reg.example.com": {"auth": _b64("u:"), "identitytoken": "refresh-123"}}},
    )
    c = creds.find("reg.example.com")
    assert c.identity_token == "refresh-123" and c.username == "u"


def test_cred_helpers_beat_store_beat_auths(no_credentials, tmp_path, monkeypatch):
    log = _helper(tmp_path, monkeypatch, "fake")
    _helper(tmp_path, monkeypatch, "other", secret="other-pw", user="ou")
    cfg = no_credentials / ".docker/config.json"
    _write(
        cfg,
        {
            "auths": {"reg.example.com": {"auth": _b64("fileuser:filepw")}},
            "credsStore": "other",
            "credHelpers": {"reg.example.com": "fake"},
        },
    )
    c = creds.find("reg.example.com")
    assert (c.username, c.password) == ("hu", "helper-pw")
    assert "docker-credential-fake" in c.source
    assert "get reg.example.com" in log.read_text()
    _write(
        cfg,
        {"auths": {"reg.example.com": {"auth": _b64("fileuser:filepw")}}, "credsStore": "other"},
    )
    assert creds.find("reg.example.com").password == "other-pw"
    # The store does not know this registry: fall back to auths.
    _write(
        cfg, {"auths": {"elsewhere.io": {"auth": _b64("fileuser:filepw")}}, "credsStore": "other"}
    )
    assert creds.find("elsewhere.io").password == "filepw"


def test_missing_helper_is_a_clear_error(no_credentials):
    _write(no_credentials / ".docker/config.json", {"credsStore": "nonexistent-xyz"})
    with pytest.raises(creds.CredentialError, match="docker-credential-nonexistent-xyz"):
        creds.find("reg.example.com")


def test_podman_files_come_before_docker(no_credentials, tmp_path, monkeypatch):
    _write(
        no_credentials / ".docker/config.json",
        {"auths": {"reg.example.com": {"auth": _b64("d:dpw")}}},
    )
    _write(
        no_credentials / ".config/containers/auth.json",
        {"auths": {"reg.example.com": {"auth": _b64("p:ppw")}}},
    )
    assert creds.find("reg.example.com").username == "p"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "ra.json"))
    _write(
        tmp_path / "ra.json",
        {
            "auths": {
                "reg.example.com": {"auth": _b64("r:rpw")},
                "reg.example.com/team": {"auth": _b64("team:tpw")},
            }
        },
    )
    assert creds.find("reg.example.com", "other/x").username == "r"
    assert creds.find("reg.example.com", "team/model").username == "team"


def test_environment_variables(no_credentials, monkeypatch):
    monkeypatch.setenv("OCIFORGE_REGISTRY_USERNAME", "envu")
    monkeypatch.setenv("OCIFORGE_REGISTRY_PASSWORD", "envpw")
    assert creds.find("any.io").username == "envu"
    monkeypatch.setenv("OCIFORGE_REGISTRY", "only.io")
    assert creds.find("any.io") is None
    assert creds.find("only.io").password == "envpw"


def test_store_writes_docker_format_0600(no_credentials):
    where = creds.store("reg.example.com", creds.Credential("u", "pw"))
    path = no_credentials / ".docker/config.json"
    assert where == "~/.docker/config.json"
    data = json.loads(path.read_text())
    assert data["auths"]["reg.example.com"]["auth"] == _b64("u:pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds.store("docker.io", creds.Credential("h", "hp"))
    data = json.loads(path.read_text())
    assert "https://index.docker.io/v1/" in data["auths"] and "reg.example.com" in data["auths"]
    assert creds.find("docker.io").password == "hp"
    assert creds.erase("reg.example.com")
    assert creds.find("reg.example.com") is None


def test_store_uses_configured_helper(no_credentials, tmp_path, monkeypatch):
    log = _helper(tmp_path, monkeypatch, "fake")
    path = no_credentials / ".docker/config.json"
    _write(path, {"credsStore": "fake"})
    assert "docker-credential-fake" in creds.store("reg.example.com", creds.Credential("u", "pw"))
    assert "store " in log.read_text()
    assert "pw" not in json.dumps(json.loads(path.read_text())["auths"])


def test_bad_files(no_credentials):
    (no_credentials / ".docker").mkdir()
    (no_credentials / ".docker/config.json").write_text("{not json")
    with pytest.raises(creds.CredentialError, match="not valid JSON"):
        creds.find("reg.example.com")
    (no_credentials / ".docker/config.json").write_text('{"auths": {"r.io": {"auth": "%%%"}}}')
    with pytest.raises(creds.CredentialError, match="base64"):
        creds.find("r.io")


def test_creds_flag_parsing():
    c = creds.Credential.parse("u:p:q")
    assert (c.username, c.password) == ("u", "p:q")
    with pytest.raises(Exception, match="USERNAME:PASSWORD"):
        creds.Credential.parse("nopassword")
