"""The registry cache (ociforge/cache/): a fresh CI runner (empty HOME, XDG_CACHE_HOME and
ociforge cache) rebuilds from what the registry holds of the previous build.

Builds run as the real CLI in subprocesses. Their network goes through a counting forward proxy
(``HTTP(S)_PROXY``), so "no wheel and no .deb downloaded" is counted, not assumed (and, since
some wheels come from a local ``file://`` mirror, the fresh cache must hold no wheel or .deb
either); the registry sits behind a counting reverse proxy, which counts what a push uploads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from ociforge.cache.entry import ARTIFACT_TYPE, tag_for
from ociforge.cache.memo import open_cache
from ociforge.oci.blobstore import BlobStore
from tests.conftest import run_cli
from tests.support.countingproxy import CountingProxy
from tests.support.freshrunner import MODEL, PLATFORMS, build, fresh_runner_env, make_project, ok
from tests.support.registry import RegistryServer


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("cache-reg"), mode="http") as reg:
        yield reg


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A model project and its lock for both platforms (the session cache fills meanwhile)."""
    return make_project(tmp_path_factory.mktemp("cache-project"))


@pytest.fixture(scope="module")
def previous(project, registry):
    """The previous CI job's build, pushed: the registry (and so the cache) holds it. The same
    inputs were built here before (to a layout), so its library check is a local hit: the
    records a fresh runner's miss needs (each wheel's facts) must reach the cache anyway."""
    ok(_build(project, "oci:local-first:m"))
    ref = registry.ref("team/model:1")
    proc = ok(_build(project, ref))
    return json.loads(proc.stdout)


def _build(project: Path, to: str, *extra: str, env: dict | None = None, lock="ociforge.lock"):
    return build(project, to, *extra, env=env, lock=lock)


def _fresh_runner(tmp_path: Path, proxy: CountingProxy) -> dict:
    """An empty HOME, XDG_CACHE_HOME and ociforge cache, every outside request through ``proxy``."""
    return fresh_runner_env(tmp_path / "runner", proxy.url)


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def _layers(result: dict, platform: str) -> dict[str, str]:
    return {layer["what"]: layer["digest"] for layer in result["layers"][platform]}


def test_fresh_runner_model_only_rebuild_downloads_nothing(project, registry, previous, tmp_path):
    (project / "model.py").write_text(MODEL.format(w="3.0"))
    try:
        with CountingProxy() as net, CountingProxy(upstream=registry.host) as reg:
            env = _fresh_runner(tmp_path, net)
            # SBOMs on (the default): their contents documents are the previous build's blobs
            proc = ok(_build(project, f"{reg.host}/team/model:2", env=env))
            fresh = json.loads(proc.stdout)
            # 0 wheel and 0 .deb bytes: nothing through the proxy, nothing in the fresh cache
            assert sum(net.received.values()) == 0, (dict(net.received), proc.stderr[-3000:])
            cache = Path(env["OCIFORGE_CACHE"])
            assert _files_under(cache / "wheels") == []
            assert _files_under(cache / "debs") == []
            model_size = max(
                layer["size"] for p in fresh["layers"] for layer in fresh["layers"][p]
                if layer["what"] == "model"
            )  # fmt: skip
            assert 0 < reg.sent < model_size + (64 << 10), (reg.sent, model_size)
        # every layer but the model's is the previous build's, by digest
        for p in ("linux/amd64", "linux/arm64"):
            before, after = _layers(previous, p), _layers(fresh, p)
            assert before.keys() == after.keys()
            assert [w for w in before if before[w] != after[w]] == ["model"]
        # the same digest as a warm rebuild on the machine that built the previous one
        warm = json.loads(ok(_build(project, f"oci:{tmp_path / 'warm'}")).stdout)
        assert warm["digest"] == fresh["digest"]
    finally:
        (project / "model.py").write_text(MODEL.format(w="2.0"))


BYTECODE = "bytecode of the modules loaded at start"


def _six_lock(project: Path) -> None:
    if not (project / "six.lock").is_file():
        ok(run_cli("fetch", "--platform", PLATFORMS, "--requirement", "six==1.17.0",
                   "--lock", "six.lock", cwd=project))  # fmt: skip


def test_fresh_runner_dependency_change_rebuilds_only_the_changed_wheels(
    project, registry, previous, tmp_path
):
    """One more dependency (six, not imported at start): the fresh runner downloads six's wheel
    alone; the bytecode, library check and every other layer come from the cache."""
    _six_lock(project)
    with CountingProxy() as net:
        env = _fresh_runner(tmp_path, net)
        proc = ok(_build(project, registry.ref("team/model:six"), env=env, lock="six.lock"))
        changed = json.loads(proc.stdout)
        assert net.received.get("deb.debian.org", 0) == 0  # the base came from the cache
        downloaded = sum(net.received.values())
    cache = Path(env["OCIFORGE_CACHE"])
    wheels = [p.name for p in _files_under(cache / "wheels") if p.suffix == ".whl"]
    assert wheels == ["six-1.17.0-py2.py3-none-any.whl"], wheels  # ... and no other wheel
    assert downloaded < 64 << 10, (dict(net.received), proc.stderr[-3000:])  # six: 11 KiB
    store = BlobStore(env["OCIFORGE_CACHE"])
    for p in ("linux/amd64", "linux/arm64"):
        before, after = _layers(previous, p), _layers(changed, p)
        new = {w for w in after if before.get(w) != after[w]}
        # six's layer is new; the others, the bytecode's included (six is not imported at
        # start), are the previous build's, taken from the cache: not written here
        assert new == {w for w in after if "six==1.17.0" in w}, new
        for w in set(after) - new - {"model"}:
            assert not store.has(after[w]), f"{w} was written again"


def _layer_names(store: BlobStore, digest: str) -> list[str]:
    import gzip
    import io
    import tarfile

    with open(store.path(digest), "rb") as f:
        data = f.read()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tf:
        return tf.getnames()


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _get_entry(registry, repo: str, tag: str) -> dict:
    resp = requests.get(registry.v2(f"{repo}/manifests/{tag}"), headers={"Accept": OCI_MANIFEST})
    assert resp.status_code == 200
    return resp.json()


def _put_entry(registry, repo: str, tag: str, manifest: dict) -> None:
    resp = requests.put(
        registry.v2(f"{repo}/manifests/{tag}"),
        data=json.dumps(manifest),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert resp.status_code == 201, resp.text


def _corrupt_entries(registry, repo: str, tags: list[str], how: str) -> int:
    """Overwrite cache entries of ``repo`` the way ``how`` says; how many were spoiled."""
    spoiled = 0
    entries = {t: _get_entry(registry, repo, t) for t in tags}
    for tag, entry in entries.items():
        ann = entry["annotations"]
        if ann["org.ociforge.memo.kind"] == "image":
            continue  # the bases stay good: a rebuild from .debs proves nothing more here
        if how == "garbage":  # a payload that is not JSON (a registry stores only manifests)
            entry["annotations"] = {**ann, "org.ociforge.memo.entry": "{not json"}
        elif how == "foreign":  # another key's entry under this key's tag
            entry = next(e for t, e in entries.items() if t != tag)
        elif how == "wrong-digest":  # a layer entry naming another blob than its layer
            if ann["org.ociforge.memo.kind"] != "layer":
                continue
            payload = json.loads(ann["org.ociforge.memo.entry"])
            other = next(
                e["layers"][0] for e in entries.values() if e["layers"][0] != entry["layers"][0]
            )
            payload["descriptor"]["digest"] = other["digest"]
            entry["annotations"] = {**ann, "org.ociforge.memo.entry": json.dumps(payload)}
        _put_entry(registry, repo, tag, entry)
        spoiled += 1
    return spoiled


def _memo_tags(registry, repo: str) -> list[str]:
    tags = requests.get(registry.v2(f"{repo}/tags/list")).json().get("tags") or []
    return [t for t in tags if t.startswith("ociforge-memo-")]


@pytest.mark.parametrize("how", ["garbage", "foreign", "wrong-digest", "missing-blob"])
def test_bad_cache_entries_cost_a_rebuild_and_one_line(project, registry, previous, tmp_path, how):
    repo = f"team/bad-{how}"
    first = json.loads(ok(_build(project, registry.ref(f"{repo}:1"))).stdout)
    tags = _memo_tags(registry, repo)
    assert len(tags) >= 6  # base, wheel groups, bytecode, runtime, checks ... of both platforms
    assert _get_entry(registry, repo, tags[0])["artifactType"] == ARTIFACT_TYPE
    if how == "missing-blob":
        # the runtime layer's blob deleted from the registry's storage: its entries now point
        # at nothing (the image's other layers stay)
        digest = _layers(first, "linux/amd64")["ociforge runtime"]
        blob = (
            registry.storage / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
        )
        assert blob.is_file()
        blob.unlink()
        bad = 1
    else:
        bad = _corrupt_entries(registry, repo, tags, how)
    env = _fresh_runner(tmp_path, CountingProxy())
    proc = ok(_build(project, registry.ref(f"{repo}:2"), env=env))
    again = json.loads(proc.stdout)
    assert again["digest"] == first["digest"]  # what the image holds did not change
    said = [line for line in proc.stderr.splitlines() if "ignoring cache entry" in line]
    assert len(said) == bad, proc.stderr[-3000:]
    # the entries were published again: a third fresh build finds them all good
    env = _fresh_runner(tmp_path / "third", CountingProxy())
    proc = ok(_build(project, registry.ref(f"{repo}:3"), env=env))
    assert "ignoring cache entry" not in proc.stderr
    assert _files_under(Path(env["OCIFORGE_CACHE"]) / "wheels") == []


def test_layout_cache_for_air_gapped_sites(project, tmp_path):
    """``--cache oci:DIR``: entries and their blobs in a layout; a fresh runner reads no wheel."""
    cache = tmp_path / "site-cache"
    first = json.loads(
        ok(_build(project, f"oci:{tmp_path / 'a'}", "--cache", f"oci:{cache}")).stdout
    )
    index = json.loads((cache / "index.json").read_text())
    assert any(
        m["annotations"]["org.opencontainers.image.ref.name"].startswith("ociforge-memo-")
        for m in index["manifests"]
    )
    env = _fresh_runner(tmp_path, CountingProxy())
    again = json.loads(
        ok(_build(project, f"oci:{tmp_path / 'b'}", "--cache", f"oci:{cache}", env=env)).stdout
    )
    assert again["digest"] == first["digest"]
    assert _files_under(Path(env["OCIFORGE_CACHE"]) / "wheels") == []


def test_offline_uses_no_cache_and_credentials_stay_with_their_registry(tmp_path):
    store = BlobStore(tmp_path / "s")
    assert open_cache("reg.example/team/cache", "reg.example/team/m:1", store, offline=True) is None
    assert open_cache(None, "oci:out", store) is None
    assert open_cache(False, "reg.example/team/m:1", store) is None
    same = open_cache(None, "reg.example/team/m:1", store, registry_opts={"auth": "u:p"})
    assert same.backend.opts["auth"] == "u:p" and same.backend.ref.repository == "team/m"
    other = open_cache(
        "other.example/c", "reg.example/team/m:1", store, registry_opts={"auth": "u:p"}
    )
    assert "auth" not in other.backend.opts  # never sent to another registry
    assert tag_for("sha256:" + "a" * 64) == "ociforge-memo-" + "a" * 64
    with pytest.raises(Exception, match="without a tag"):
        open_cache("reg.example/team/cache:v1", "oci:out", store)


def test_unreachable_cache_is_one_line(project, tmp_path):
    """A cache that cannot be reached is said once; the build goes on as if it had none."""
    env = _fresh_runner(tmp_path, CountingProxy())
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    env["OCIFORGE_CACHE"] = os.environ["OCIFORGE_CACHE"]
    proc = ok(_build(project, f"oci:{tmp_path / 'o'}", "--cache", "127.0.0.1:9/team/c", env=env))
    assert proc.stderr.count("not used") == 1, proc.stderr[-2000:]


def test_warm_rebuild_asks_the_cache_nothing(project, registry, previous):
    """A machine that published (or found) an entry notes it: its next rebuild finds every layer
    in its own memo and asks the registry cache about none of them."""
    with CountingProxy(upstream=registry.host) as reg:
        ok(_build(project, f"{reg.host}/team/model:warm", "--no-sbom"))  # finds them, notes it
        first = [path for _method, path in reg.requests if "ociforge-memo-" in path]
        reg.requests.clear()
        ok(_build(project, f"{reg.host}/team/model:warm", "--no-sbom"))
        asked = [path for _method, path in reg.requests if "ociforge-memo-" in path]
    assert first and asked == []


def test_entries_are_parsed_for_their_own_key_and_blobs():
    """What :func:`ociforge.cache.entry.parse` refuses before any lookup uses an entry."""
    from ociforge.cache.entry import BadEntry, entry_layer, layer_entry, parse
    from ociforge.oci.layer import Layer
    from ociforge.oci.manifest import Descriptor

    key = "b" * 64
    blob = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "c" * 64, 10)
    good = layer_entry(key, Layer(blob, "sha256:" + "d" * 64))
    assert entry_layer(parse(good.to_bytes(), key)).descriptor == blob
    with pytest.raises(BadEntry, match="written for key"):
        parse(good.to_bytes(), "e" * 64)
    with pytest.raises(BadEntry, match="not a manifest"):
        parse(b"{not json", key)
    elsewhere = layer_entry(
        key, Layer(blob.with_(urls=("https://x.example/l",)), "sha256:" + "d" * 64)
    )
    with pytest.raises(BadEntry, match="urls"):
        entry_layer(parse(elsewhere.to_bytes(), key))


# ---------------------------------------------------------------------------------------------
# Records (ociforge/cache/records.py): the bytecode closure and the wheels' facts, through a
# layout cache, each step on a fresh store (a fresh runner). No network: tiny local wheels.

APP = "try:\n    import extra\nexcept ImportError:\n    extra = None\nimport other\n"


def _wheel(where: Path, name: str, files: dict[str, str]):
    """A tiny pure wheel, and its lock entry."""
    import hashlib
    import zipfile

    from ociforge.python.lock import LockedWheel

    path = where / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(member, text)
        zf.writestr(f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\n")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    return LockedWheel(name, "1.0", path.name, path.as_uri(), sha, len(data)), path


@pytest.fixture
def wheels(tmp_path):
    d = tmp_path / "wheels"
    d.mkdir()
    return {
        "app": _wheel(d, "app", {"app/__init__.py": APP}),
        "other": _wheel(d, "other", {"other.py": "X = 1\n"}),
        "unrelated": _wheel(d, "unrelated", {"unrelated/__init__.py": "Y = 2\n"}),
        "extra": _wheel(d, "extra", {"extra/__init__.py": "import other\nZ = 3\n"}),
    }


def _fresh_bytecode(tmp_path: Path, cache: Path | None, wheels: dict, names: list[str]):
    """The bytecode layer of the wheels ``names``, on a fresh store with the layout ``cache``
    (published after); the names of the wheels it fetched, and the store."""
    import sys

    from ociforge.builder.cachestep import LazyWheels
    from ociforge.builder.layers import startup_bytecode_layer
    from ociforge.oci.layercache import attach
    from ociforge.python.bytecode import CompilePool
    from ociforge.python.lock import Lock
    from ociforge.python.target import Target

    target = Target.make("linux/amd64", python=f"{sys.version_info[0]}.{sys.version_info[1]}")
    store = BlobStore(tmp_path / f"store-{len(list(tmp_path.glob('store-*')))}")
    memo = open_cache(f"oci:{cache}", "oci:out", store) if cache is not None else None
    lock = Lock(target, [wheels[n][0] for n in names])
    paths = {w.sha256: p for w, p in wheels.values()}
    fetched: list[str] = []

    def fetch(ws):
        fetched.extend(w.name for w in ws)
        return [paths[w.sha256] for w in ws]

    attach(store, memo)
    try:
        with CompilePool(1) as pool:
            layer = startup_bytecode_layer(
                target, lock, LazyWheels(lock.packages, fetch), {}, ["app"], "code", store,
                "gzip", pool,
            )  # fmt: skip
    finally:
        attach(store, None)
    if memo is not None:
        memo.publish()
    return layer, sorted(fetched), store


def _members(store: BlobStore, layer) -> list[str]:
    """The top-level modules whose .pyc the layer holds."""
    out = set()
    for name in _layer_names(store, layer.digest):
        if name.endswith(".pyc"):
            parts = name.split("site-packages/", 1)[1].split("/")
            out.add(parts[1].split(".")[0] if parts[0] == "__pycache__" else parts[0])
    return sorted(out)


def test_bytecode_closure_is_reused_while_no_new_wheel_is_looked_up(tmp_path, wheels):
    cache = tmp_path / "cache"
    first, fetched, store = _fresh_bytecode(tmp_path, cache, wheels, ["app", "other"])
    assert fetched == ["app", "other"]
    assert sorted(_members(store, first)) == ["app", "other"]
    # a wheel nothing imports at start: only its listing is read, the layer is the same
    again, fetched, _ = _fresh_bytecode(tmp_path, cache, wheels, ["app", "other", "unrelated"])
    assert fetched == ["unrelated"]
    assert again.digest == first.digest
    # a wheel providing a module the closure looked up (and did not find): compiled again, with it
    grown, fetched, store = _fresh_bytecode(tmp_path, cache, wheels, ["app", "extra", "other"])
    assert fetched == ["app", "extra", "other"]
    assert sorted(_members(store, grown)) == ["app", "extra", "other"]
    alone, _, _ = _fresh_bytecode(tmp_path, None, wheels, ["app", "extra", "other"])
    assert grown.digest == alone.digest  # what a build with no cache at all makes
    # a used wheel gone: compiled again (other is imported by app)
    less, fetched, store = _fresh_bytecode(tmp_path, cache, wheels, ["app", "unrelated"])
    assert sorted(_members(store, less)) == ["app"] and "app" in fetched


def test_a_bad_record_in_the_cache_costs_a_rebuild_and_one_line(tmp_path, wheels, caplog):
    from ociforge.cache.entry import record_entry
    from ociforge.cache.memo import BuildMemo

    cache = tmp_path / "cache"
    first, _, store = _fresh_bytecode(tmp_path, cache, wheels, ["app", "other"])
    keys = [p.stem for p in (store.root / "records").rglob("*.json")]
    assert len(keys) == 1  # the closure's
    spoiled = record_entry(keys[0], {"format": 1, "used": "not a list", "lock": [], "looked": []})
    memo: BuildMemo = open_cache(f"oci:{cache}", "oci:out", store)
    memo.backend.publish([spoiled], None)
    with caplog.at_level("WARNING", logger="ociforge.cache"):
        again, fetched, _ = _fresh_bytecode(tmp_path, cache, wheels, ["app", "other"])
    said = [r.getMessage() for r in caplog.records if "ignoring cache entry" in r.getMessage()]
    assert len(said) == 1 and "used" in said[0], said
    assert again.digest == first.digest and fetched == ["app", "other"]
    # the good record went back into the cache: the next fresh runner reads no wheel
    _, fetched, _ = _fresh_bytecode(tmp_path, cache, wheels, ["app", "other"])
    assert fetched == []


def test_record_entries_are_parsed_as_hostile_input():
    from ociforge.cache.entry import BadEntry, entry_record, parse, record_entry
    from ociforge.oci.manifest import Descriptor

    key = "f" * 64
    good = record_entry(key, {"used": []})
    assert entry_record(parse(good.to_bytes(), key)) == {"used": []}
    with pytest.raises(BadEntry, match="JSON object"):
        entry_record(parse(record_entry(key, ["not", "an", "object"]).to_bytes(), key))  # type: ignore[arg-type]
    blob = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:" + "c" * 64, 10)
    with pytest.raises(BadEntry, match="naming blobs"):
        entry_record(parse(type(good)(key, "record", good.payload, (blob,)).to_bytes(), key))
    with pytest.raises(BadEntry, match="more than an entry"):
        parse(record_entry(key, {"x": "y" * (1 << 20)}).to_bytes(), key)


def test_system_packages_layer_and_its_files_come_from_the_cache(tmp_path, monkeypatch):
    """A fresh runner finds the system-packages layer in the cache and the files it provides in
    a record: no .deb is read (the library check needs those files)."""
    from ociforge.bases import syspackages
    from ociforge.bases.base import default_base
    from ociforge.oci.layercache import attach
    from ociforge.oci.platform import Platform

    amd64 = Platform.parse("linux/amd64")
    base = default_base("3.11", [amd64])[amd64]
    lock = syspackages.plan(["libbsd0"], {amd64: (base, "ociforge-base:python3.11")})[amd64]
    cache = tmp_path / "cache"

    def layer_on_a_fresh_runner(name: str):
        store = BlobStore(tmp_path / name / "store")
        monkeypatch.setenv("OCIFORGE_CACHE", str(tmp_path / name / "store"))
        memo = open_cache(f"oci:{cache}", "oci:out", store)
        attach(store, memo)
        try:
            made = syspackages.system_layer(lock, store, "gzip", 0)
        finally:
            attach(store, None)
        memo.publish()
        return made

    first = layer_on_a_fresh_runner("first")

    def no_debs(_lock):
        raise AssertionError("a .deb was read")

    monkeypatch.setattr(syspackages, "fetch_debs", no_debs)
    again = layer_on_a_fresh_runner("again")
    assert again.layer.digest == first.layer.digest
    assert again.provided.files == first.provided.files and first.provided.files
