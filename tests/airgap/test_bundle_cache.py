"""Registry-cache entries travel in a bundle (ociforge/airgap/cacheentries.py): exported with the
image from registry A, imported with it into registry B, where a build on a fresh runner (empty
ociforge cache and HOME) finds every layer and record and downloads no wheel and no .deb."""

from __future__ import annotations

import json

from ociforge.cache.entry import ARTIFACT_TYPE
from ociforge.transports.archive import TarSource, read_layout_in_tar
from tests.airgap.conftest import PLATFORM, ok
from tests.conftest import run_cli
from tests.support.registry import RegistryServer


def test_bundle_carries_cache_entries_to_the_closed_registry(bundle, online, project, tmp_path):
    path, manifest = bundle
    _ref, digest = online
    carried = manifest["cache"]
    assert len(carried) >= 4  # base, wheel layers, bytecode, runtime, library check
    src = TarSource(path)
    kinds = set()
    for item in carried:
        entry = read_layout_in_tar(src, item["tag"])
        assert entry.manifest.artifact_type == ARTIFACT_TYPE
        kinds.add(entry.manifest.annotations["org.ociforge.memo.kind"])
    # records (wheels' facts, the bytecode closure) travel too: without the closure's, the
    # closed side would compile the bytecode again, from every wheel
    assert {"layer", "image", "check", "record"} <= kinds, kinds
    with RegistryServer(tmp_path, mode="http") as reg_b:
        ok(run_cli("bundle", "import", path, "--to-registry", reg_b.host, "--prefix", "closed"))
        runner = tmp_path / "runner"
        env = {"OCIFORGE_CACHE": str(runner / "cache"), "HOME": str(runner)}
        to = f"{reg_b.host}/closed/models/m:2"
        args = ["model.py:predict", "--platform", PLATFORM, "--lock", "ociforge.lock", "--to", to]
        proc = ok(run_cli("build", *args, "--json", cwd=project, env=env))
        assert json.loads(proc.stdout)["digest"] == digest
        assert not (runner / "cache" / "wheels").exists()
        assert not (runner / "cache" / "debs").exists()
        assert "ignoring cache entry" not in proc.stderr
