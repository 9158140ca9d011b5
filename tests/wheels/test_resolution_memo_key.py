"""The remembered resolution is looked up by a hash of pip's raw configuration inputs (files and
``PIP_*`` variables), not by parsing them: a rebuild imports none of pip's configuration
machinery, yet any change pip would see makes another key, and no input is written anywhere."""

from __future__ import annotations

import os

import pytest

from ociforge.python import resolve as resolve_mod
from ociforge.python.resolve import IndexSettings, ResolveOptions, pip_config_files
from ociforge.python.target import Target
from tests.wheels.wheelmaker import make_wheel

AMD = Target.make("linux/amd64")
SECRET = "idx-k3y-s3cr3t"


@pytest.fixture
def pip_env(tmp_path, monkeypatch):
    """pip's configuration from this test only: its own config file (and XDG/HOME folders), no
    ``PIP_*`` variable of the machine's, and a cache of its own."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "xdg"))
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\ntimeout = 60\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("OCIFORGE_CACHE", str(tmp_path / "cache"))
    return conf


def _key(opts: ResolveOptions | None = None) -> str:
    return (opts or ResolveOptions()).index_key()


def test_every_file_pip_reads_is_in_the_key(pip_env, tmp_path, monkeypatch):
    """pip_config_files lists every file pip's own Configuration would load, with or without
    PIP_CONFIG_FILE and the XDG folders set (a pip that reads another file fails here)."""
    from pip._internal.configuration import Configuration

    def pip_reads() -> set[str]:
        return {
            f for _kind, files in Configuration(isolated=False).iter_config_files() for f in files
        }

    assert pip_reads() <= set(pip_config_files())
    monkeypatch.delenv("PIP_CONFIG_FILE")
    monkeypatch.delenv("XDG_CONFIG_DIRS")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert pip_reads() <= set(pip_config_files())
    monkeypatch.setenv("XDG_CONFIG_DIRS", f"{tmp_path}/a{os.pathsep}{tmp_path}/b")
    assert pip_reads() <= set(pip_config_files())
    assert f"{tmp_path}/b/pip/pip.conf" in pip_config_files()


def test_what_pip_would_read_changes_the_key(pip_env, tmp_path, monkeypatch):
    """PIP_INDEX_URL set or changed, the config file edited, a user config file appearing, the
    options' own index: each a new key; the same inputs, the same key."""
    first = _key()
    assert _key() == first
    seen = {first}

    monkeypatch.setenv("PIP_INDEX_URL", "https://a.example/simple")
    seen.add(_key())
    monkeypatch.setenv("PIP_INDEX_URL", "https://b.example/simple")
    seen.add(_key())
    monkeypatch.delenv("PIP_INDEX_URL")
    assert _key() == first  # back as it was: the memo of then is found again

    pip_env.write_text("[global]\nindex-url = https://c.example/simple\n")
    seen.add(_key())
    pip_env.write_text("[global]\ntimeout = 60\n")
    assert _key() == first

    user = tmp_path / "home" / ".config" / "pip" / "pip.conf"
    user.parent.mkdir(parents=True)
    user.write_text("[install]\nextra-index-url = https://d.example/simple\n")
    seen.add(_key())
    user.unlink()
    assert _key() == first

    seen.add(_key(ResolveOptions(index=IndexSettings(index_url="https://e.example/simple"))))
    seen.add(_key(ResolveOptions(use_pip_config=False)))
    assert len(seen) == 7


def test_without_pip_config_the_machine_s_does_not_matter(pip_env, monkeypatch):
    opts = ResolveOptions(use_pip_config=False, index=IndexSettings(no_index=True))
    before = _key(opts)
    monkeypatch.setenv("PIP_INDEX_URL", "https://a.example/simple")
    pip_env.write_text("[global]\nindex-url = https://c.example/simple\n")
    assert _key(opts) == before


def test_a_config_that_is_not_a_file_is_parsed_instead(pip_env, tmp_path, monkeypatch):
    """A PIP_CONFIG_FILE that is a folder: no raw hash (pip decides what it makes of it), so the
    key comes from the parsed settings, as before; os.devnull is hashed (empty)."""
    assert resolve_mod.pip_config_inputs() is not None
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip's "no files" (benchmarks use it)
    assert resolve_mod.pip_config_inputs() is not None
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path))
    assert resolve_mod.pip_config_inputs() is None
    parsed = []
    real = resolve_mod.pip_index_settings
    monkeypatch.setattr(resolve_mod, "pip_index_settings", lambda: parsed.append(1) or real())
    assert len(_key()) == 64 and parsed == [1]


def test_a_rebuild_parses_no_pip_config_and_a_changed_one_resolves_again(
    pip_env, tmp_path, monkeypatch
):
    """With the same pip inputs a resolution is reused without parsing pip's configuration;
    pip's find-links changed (PIP_FIND_LINKS) is a new resolution, from the new place; back to
    the first, its memo again. A real uv, --no-index from pip's own settings."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    make_wheel(old, "keydemo", "1.0")
    make_wheel(new, "keydemo", "2.0")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(old))
    parsed = []
    real = resolve_mod.pip_index_settings
    monkeypatch.setattr(resolve_mod, "pip_index_settings", lambda: parsed.append(1) or real())
    opts = ResolveOptions(annotate=False)

    def version() -> str:
        return resolve_mod.resolve(["keydemo"], [AMD], opts)[AMD].packages[0].version

    assert not resolve_mod.remembered(["keydemo"], [AMD], opts) and parsed == []
    assert version() == "1.0" and parsed == [1]  # resolved: parsed once
    assert resolve_mod.remembered(["keydemo"], [AMD], opts)
    assert version() == "1.0" and parsed == [1]  # remembered: not parsed
    monkeypatch.setenv("PIP_FIND_LINKS", str(new))
    assert not resolve_mod.remembered(["keydemo"], [AMD], opts)
    assert version() == "2.0" and parsed == [1, 1]
    monkeypatch.setenv("PIP_FIND_LINKS", str(old))
    assert version() == "1.0" and parsed == [1, 1]
    assert resolve_mod.recall(["keydemo"], [AMD], opts)[AMD].packages[0].version == "1.0"


def test_index_credentials_are_never_written(pip_env, tmp_path, monkeypatch):
    """A PIP_INDEX_URL with a password is part of the key, as a hash only: no file the
    resolution leaves holds it."""
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "keydemo", "1.0")
    monkeypatch.setenv("PIP_INDEX_URL", f"https://alice:{SECRET}@idx.example/simple")
    pip_env.write_text(f"[global]\nextra-index-url = https://bob:{SECRET}@x.example/simple\n")
    opts = ResolveOptions(IndexSettings(no_index=True, find_links=[str(links)]), annotate=False)
    resolve_mod.resolve(["keydemo"], [AMD], opts)
    written = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert any(p.parent.name == "resolutions" for p in written)
    for p in written:
        assert SECRET not in p.name and SECRET.encode() not in p.read_bytes(), p
