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
from tests.support.registry import RegistryServer

PLATFORMS = "linux/amd64,linux/arm64"
MODEL = """
WEIGHTS = [0.5, -0.25, {w}]


def predict(row):
    return sum(w * x for w, x in zip(WEIGHTS, row))
"""


def ok(proc):
    if proc.returncode != 0:
        pytest.fail(f"exited {proc.returncode}:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("cache-reg"), mode="http") as reg:
        yield reg


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A model project and its lock for both platforms (the session cache fills meanwhile)."""
    d = tmp_path_factory.mktemp("cache-project")
    (d / "model.py").write_text(MODEL.format(w="2.0"))
    ok(run_cli("fetch", "--platform", PLATFORMS, "--lock", "ociforge.lock", cwd=d))
    return d


@pytest.fixture(scope="module")
def previous(project, registry):
    """The previous CI job's build, pushed: the registry (and so the cache) holds it."""
    ref = registry.ref("team/model:1")
    proc = ok(_build(project, ref))
    return json.loads(proc.stdout)


def _build(project: Path, to: str, *extra: str, env: dict | None = None, lock="ociforge.lock"):
    return run_cli(
        "build", "model.py:predict", "--platform", PLATFORMS, "--lock", lock, "--to", to,
        "--json", *extra, cwd=project, env=env,
    )  # fmt: skip


def _fresh_runner(tmp_path: Path, proxy: CountingProxy) -> dict:
    """An empty HOME, XDG_CACHE_HOME and ociforge cache, every outside request through ``proxy``."""
    home = tmp_path / "runner"
    for sub in ("home", "xdg", "cache"):
        (home / sub).mkdir(parents=True)
    return {
        "HOME": str(home / "home"),
        "XDG_CACHE_HOME": str(home / "xdg"),
        "OCIFORGE_CACHE": str(home / "cache"),
        "UV_CACHE_DIR": str(home / "xdg" / "uv"),
        "HTTP_PROXY": proxy.url,
        "HTTPS_PROXY": proxy.url,
        "http_proxy": proxy.url,
        "https_proxy": proxy.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def _layers(result: dict, platform: str) -> dict[str, str]:
    return {layer["what"]: layer["digest"] for layer in result["layers"][platform]}


def test_fresh_runner_model_only_rebuild_downloads_nothing(project, registry, previous, tmp_path):
    (project / "model.py").write_text(MODEL.format(w="3.0"))
    try:
        with CountingProxy() as net, CountingProxy(upstream=registry.host) as reg:
            env = _fresh_runner(tmp_path, net)
            # (no SBOM: the two SPDX referrers, ~64 KiB each, describe a new image each build)
            proc = ok(_build(project, f"{reg.host}/team/model:2", "--no-sbom", env=env))
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


def test_fresh_runner_dependency_change_rebuilds_only_the_changed_wheels(
    project, registry, previous, tmp_path
):
    ok(run_cli("fetch", "--platform", PLATFORMS, "--requirement", "six==1.17.0",
               "--lock", "six.lock", cwd=project))  # fmt: skip
    with CountingProxy() as net:
        env = _fresh_runner(tmp_path, net)
        proc = ok(_build(project, registry.ref("team/model:six"), env=env, lock="six.lock"))
        changed = json.loads(proc.stdout)
        assert net.received.get("deb.debian.org", 0) == 0  # the base came from the cache
    store = BlobStore(env["OCIFORGE_CACHE"])
    for p in ("linux/amd64", "linux/arm64"):
        before, after = _layers(previous, p), _layers(changed, p)
        same = {w for w in after if before.get(w) == after[w]}
        new = {w for w in after if w not in same}
        # the group holding six (and the bytecode over every wheel) is new; the others are the
        # previous layers, taken from the cache: not written here
        assert any("six==1.17.0" in w for w in new), new
        assert new <= {w for w in after if "six==1.17.0" in w} | {
            "bytecode of the modules loaded at start"
        }, new
        assert any(w.startswith("wheels numpy") for w in same)
        # the model's layer (1 KiB) is always written; the bytecode's key names every wheel, so
        # it is compiled again (to the same bytes when six is not imported at start)
        for w in same - {"model", "bytecode of the modules loaded at start"}:
            assert not store.has(after[w]), f"{w} was written again"


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
