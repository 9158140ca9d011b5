"""SBOMs made by the build: valid by the libraries' own validators, listing every wheel of the lock
and every .deb of the base lock with the hashes in those lock files, attached as OCI referrers
found through the referrers tag on the reference registry and in an OCI layout, reproducible,
and leaving the image digests unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import urllib.error
import urllib.request

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

import ociforge
from ociforge.bases.base import default_recipe
from ociforge.errors import InvalidInput, NotFound
from ociforge.oci.blobstore import BlobStore
from ociforge.oci.platform import Platform
from ociforge.supply import attach, keys, referrers, sbom
from ociforge.supply.place import Place, fallback_tag
from tests.registry.conftest import build_image
from tests.supply.conftest import PASSWORD, cosign_verify

PLATFORMS = ["linux/amd64", "linux/arm64"]
REQS = ["six==1.16.0"]
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def predict(rows):
    return [sum(r) for r in rows]


def _build(to, **kw):
    return ociforge.build(
        predict, platforms=kw.pop("platforms", PLATFORMS), requirements=REQS, to=to,
        name="sbomdemo", version="2.0", **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pushed(registry):
    ref = registry.ref("supply/sbom:1")
    return _build(ref), ref


@pytest.fixture(scope="module")
def in_layout(tmp_path_factory):
    out = tmp_path_factory.mktemp("layout") / "out"
    return _build(f"oci:{out}:m"), out


def _images(result) -> dict[str, str]:
    return {str(d.platform): d.digest for d, _img in result.image.images()}


def _lock_file(platform: str) -> dict:
    recipe = default_recipe(PY)
    path = recipe.lock_path(Platform.parse(platform).debian_arch)
    return json.loads(path.read_text())


def _wheel_lock(result, platform: str):
    (lock,) = [lk for t, lk in result.locks.items() if str(t.platform) == platform]
    return lock


def _spdx_valid(doc: dict) -> None:
    parsed = JsonLikeDictParser().parse(doc)
    assert validate_full_spdx_document(parsed) == []


def _purl(pkg: dict) -> str:
    refs = pkg.get("externalRefs") or []
    return next((r["referenceLocator"] for r in refs if r["referenceType"] == "purl"), "")


def _check_contents(doc: dict, result, platform: str) -> None:
    by_purl = {_purl(p): p for p in doc["packages"] if p.get("externalRefs")}
    debs = [p for p in doc["packages"] if _purl(p).startswith("pkg:deb/debian/")]
    wheels = [p for p in doc["packages"] if _purl(p).startswith("pkg:pypi/")]
    lock = _lock_file(platform)
    assert len(debs) == len(lock["packages"]) > 10
    got = {(p["name"], p["versionInfo"], p["checksums"][0]["checksumValue"]) for p in debs}
    assert got == {(p["name"], p["version"], p["sha256"]) for p in lock["packages"]}
    for p in debs:
        assert p["licenseDeclared"] == "NOASSERTION"  # the lock carries no licences
        assert "arch=" in _purl(p)
    wheel_lock = _wheel_lock(result, platform)
    assert len(wheels) == len(wheel_lock.packages) > 1
    got = {(p["name"], p["versionInfo"], p["packageFileName"], p["checksums"][0]["checksumValue"]) for p in wheels}  # fmt: skip
    assert got == {(w.name, w.version, w.filename, w.sha256) for w in wheel_lock.packages}
    assert "pkg:pypi/six@1.16.0" in by_purl
    # the image itself, its base, and ociforge's own layers by digest
    image_digest = _images(result)[platform]
    (image,) = [p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-image"]
    assert image["checksums"][0]["checksumValue"] == image_digest.split(":")[1]
    names = {p["name"] for p in doc["packages"]}
    assert {"ociforge runtime", "model"} <= names
    layer_pkgs = [p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-layer")]
    report = {e["digest"].split(":")[1] for e in result.layers[platform]}
    assert {p["checksums"][0]["checksumValue"] for p in layer_pkgs} == report
    # the image contains its layers and the contents (the packages the base and the lock put in)
    contains = {
        (r["spdxElementId"], r["relatedSpdxElement"])
        for r in doc["relationships"]
        if r["relationshipType"] == "CONTAINS"
    }
    assert ("SPDXRef-image", "SPDXRef-contents") in contains
    assert {b for a, b in contains if a == "SPDXRef-image"} == {p["SPDXID"] for p in layer_pkgs} | {
        "SPDXRef-contents"
    }
    assert {b for a, b in contains if a == "SPDXRef-contents"} == {
        p["SPDXID"] for p in debs + wheels
    }


def test_registry_sbom_valid_complete_and_found_by_the_referrers_tag(pushed, registry, cli):
    result, ref = pushed
    assert set(result.sboms) == set(PLATFORMS)
    for platform, digest in _images(result).items():
        # the reference registry has no referrers API: the fallback tag holds the index
        try:
            urllib.request.urlopen(f"{registry.url}/v2/supply/sbom/referrers/{digest}")
            raise AssertionError("this registry was expected to lack the referrers API")
        except urllib.error.HTTPError as e:
            assert e.code == 404
        req = urllib.request.Request(
            f"{registry.url}/v2/supply/sbom/manifests/{fallback_tag(digest)}",
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        )
        with urllib.request.urlopen(req) as resp:
            index = json.load(resp)
        # two referrers: the contents document under SPDX's own type (what a scanner takes),
        # the image document under ociforge's (result.sboms names it)
        by_type = {m["artifactType"]: m for m in index["manifests"]}
        assert len(index["manifests"]) == 2
        assert set(by_type) == {sbom.SPDX_MEDIA_TYPE, sbom.IMAGE_ARTIFACT_TYPES["spdx"]}
        entry = by_type[sbom.IMAGE_ARTIFACT_TYPES["spdx"]]
        assert entry["digest"] == result.sboms[platform]
        assert by_type[sbom.SPDX_MEDIA_TYPE]["annotations"][attach.PART] == "contents"
        req = urllib.request.Request(
            f"{registry.url}/v2/supply/sbom/manifests/{entry['digest']}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        with urllib.request.urlopen(req) as resp:
            art = json.load(resp)
        assert art["subject"]["digest"] == digest
        assert art["artifactType"] == sbom.IMAGE_ARTIFACT_TYPES["spdx"]
        (layer,) = art["layers"]  # one document per artifact (Trivy reads only those)
        assert layer["mediaType"] == sbom.SPDX_MEDIA_TYPE
        proc = cli("sbom", ref, "--platform", platform)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        _spdx_valid(doc)
        _check_contents(doc, result, platform)


def test_layout_sbom_found_by_the_fallback_tag_and_same_bytes(in_layout, pushed, cli):
    result, out = in_layout
    reg_result, ref = pushed
    assert result.digest == reg_result.digest  # same inputs, same image, wherever it goes
    tags = {
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads((out / "index.json").read_text())["manifests"]
    }
    assert {fallback_tag(d) for d in _images(result).values()} <= tags
    for platform in PLATFORMS:
        local = cli("sbom", f"oci:{out}:m", "--platform", platform)
        remote = cli("sbom", ref, "--platform", platform)
        assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
        assert local.stdout == remote.stdout
        _check_contents(json.loads(local.stdout), result, platform)


def test_rebuild_gives_the_same_sbom_and_no_second_referrer(in_layout, cli):
    result, out = in_layout
    again = _build(f"oci:{out}:m")
    assert again.digest == result.digest
    assert again.sboms == result.sboms
    listing = json.loads(cli("sbom", f"oci:{out}:m", "--list").stdout)
    assert sorted((f["platform"], f["part"]) for f in listing) == sorted(
        (p, part) for p in PLATFORMS for part in ("contents", "image")
    )


def test_sbom_changes_no_image_digest(in_layout, tmp_path):
    result, _out = in_layout
    plain = _build(f"oci:{tmp_path / 'plain'}:m", sbom=False)
    assert plain.digest == result.digest
    assert plain.sboms == {}
    tags = json.loads((tmp_path / "plain" / "index.json").read_text())["manifests"]
    assert len(tags) == 1


def test_cyclonedx_sbom_validates_and_lists_every_wheel(tmp_path, cli):
    out = tmp_path / "cdx"
    result = _build(f"oci:{out}:m", platforms=["linux/arm64"], sbom="cyclonedx")
    proc = cli("sbom", f"oci:{out}:m", "--format", "cyclonedx")
    assert proc.returncode == 0, proc.stderr
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(proc.stdout) is None
    doc = json.loads(proc.stdout)
    assert doc["specVersion"] == "1.6"
    wheels = {(c["name"], c["version"], c["hashes"][0]["content"]) for c in doc["components"] if c.get("purl", "").startswith("pkg:pypi/")}  # fmt: skip
    lock = _wheel_lock(result, "linux/arm64")
    assert wheels == {(w.name, w.version, w.sha256) for w in lock.packages}
    debs = [c for c in doc["components"] if c.get("purl", "").startswith("pkg:deb/debian/")]
    assert len(debs) == len(_lock_file("linux/arm64")["packages"])
    # as stored: two BOMs, both valid; the image's names the contents BOM by BOM-Link and hash
    image, contents = (
        cli("sbom", f"oci:{out}:m", "--part", part).stdout for part in ("image", "contents")
    )
    for stored in (image, contents):
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(stored) is None
    (ref,) = json.loads(image)["externalReferences"]
    assert ref["type"] == "bom"
    assert ref["hashes"] == [
        {"alg": "SHA-256", "content": hashlib.sha256(contents.encode()).hexdigest()}
    ]
    serial = json.loads(contents)["serialNumber"].removeprefix("urn:uuid:")
    assert ref["url"] == f"urn:cdx:{serial}/1"
    assert {c["bom-ref"] for c in json.loads(contents)["components"]} | {"contents"} <= {
        c["bom-ref"] for c in doc["components"]
    }


def _parts(out, platform: str) -> tuple[bytes, bytes, dict]:
    """The image and contents documents of ``platform`` as stored in the layout ``out``, and the
    referrers index (the ``sha256-<hex>`` tag) they were found through."""
    layout = json.loads((out / "index.json").read_text())
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in layout["manifests"]}
    blob = lambda d: (out / "blobs" / "sha256" / d.split(":")[1]).read_bytes()  # noqa: E731
    top = json.loads(blob(tags["m"]["digest"]))
    os_, arch = platform.split("/")
    (image_digest,) = [
        m["digest"] for m in top["manifests"]
        if (m["platform"]["os"], m["platform"]["architecture"]) == (os_, arch)
    ]  # fmt: skip
    index = json.loads(blob(tags[fallback_tag(image_digest)]["digest"]))
    docs = {}
    for entry in index["manifests"]:
        art = json.loads(blob(entry["digest"]))
        docs[entry["annotations"][attach.PART]] = blob(art["layers"][0]["digest"])
    return docs["image"], docs["contents"], index


def test_split_documents_validate_and_the_image_one_names_the_contents_by_sha256(in_layout, cli):
    result, out = in_layout
    for platform in PLATFORMS:
        image, contents, index = _parts(out, platform)
        image_doc, contents_doc = json.loads(image), json.loads(contents)
        _spdx_valid(image_doc)
        _spdx_valid(contents_doc)
        # the reference: by the contents document's namespace and sha256, its blob's digest
        (ref,) = image_doc["externalDocumentRefs"]
        assert ref["externalDocumentId"] == "DocumentRef-contents"
        assert ref["spdxDocument"] == contents_doc["documentNamespace"]
        assert ref["checksum"] == {
            "algorithm": "SHA256",
            "checksumValue": hashlib.sha256(contents).hexdigest(),
        }
        rels = {(r["spdxElementId"], r["relatedSpdxElement"]) for r in image_doc["relationships"]}
        assert ("SPDXRef-image", "DocumentRef-contents:SPDXRef-contents") in rels
        # every package of the base lock and the wheel lock is in the contents document; it
        # names nothing of the model or the image, so a model-only rebuild keeps its bytes
        merged = json.loads(sbom.merge(image, contents, "spdx"))
        _check_contents(merged, result, platform)
        image_hex = _images(result)[platform].split(":")[1]
        assert image_hex not in contents.decode() and "sbomdemo" not in contents.decode()
        assert image_hex in image.decode()
        # ociforge sbom: the two merged by default, each as stored with --part
        for part, data in (("image", image), ("contents", contents)):
            proc = cli("sbom", f"oci:{out}:m", "--platform", platform, "--part", part)
            assert proc.returncode == 0 and proc.stdout.encode() == data, proc.stderr
        complete = cli("sbom", f"oci:{out}:m", "--platform", platform)
        assert json.loads(complete.stdout) == merged
        # the image document is small: what a model-only rebuild pushes of the SBOMs
        assert len(image) < 16 << 10 < len(contents)
        assert sorted(m["annotations"][attach.PART] for m in index["manifests"]) == [
            "contents",
            "image",
        ]


def test_model_only_rebuild_keeps_the_contents_document(in_layout, tmp_path):
    """Another model on the same lock: a new image document, the same contents bytes."""
    result, out = in_layout

    def other(rows):
        return [max(r) for r in rows]

    again = ociforge.build(
        other, platforms=["linux/arm64"], requirements=REQS, to=f"oci:{tmp_path / 'o'}:m",
        name="other", version="3.1",
    )  # fmt: skip
    image_a, contents_a, _ = _parts(out, "linux/arm64")
    image_b, contents_b, _ = _parts(tmp_path / "o", "linux/arm64")
    assert contents_a == contents_b
    assert image_a != image_b
    assert sbom.contents_sha256(image_b, "spdx") == hashlib.sha256(contents_a).hexdigest()
    assert again.sboms["linux/arm64"] != result.sboms["linux/arm64"]


def test_merge_refuses_a_contents_document_that_is_not_the_one_named():
    inp = _inputs()
    split = sbom.render_split(inp)
    other = sbom.render_split(
        dataclasses.replace(
            inp, wheels=(sbom.Wheel("six", "1.17.0", "six-1.17.0-py2.py3-none-any.whl", "d" * 64),)
        )  # fmt: skip
    )
    assert split.image != other.image and split.contents != other.contents
    with pytest.raises(InvalidInput, match="does not hash to"):
        sbom.merge(split.image, other.contents, "spdx")
    with pytest.raises(InvalidInput, match="not JSON"):
        sbom.merge(b"{not json", split.contents, "spdx")
    found = [
        attach.FoundSbom("sha256:" + "a" * 64, None, "spdx", "sha256:" + "f" * 64, split.image, "image"),
        attach.FoundSbom("sha256:" + "a" * 64, None, "spdx", "sha256:" + "e" * 64, other.contents, "contents"),
    ]  # fmt: skip
    with pytest.raises(NotFound, match="not attached"):
        attach.complete_sboms(found)
    found[1] = dataclasses.replace(found[1], data=split.contents)
    (complete,) = attach.complete_sboms(found)
    assert complete.data == sbom.render(inp)[0]


def _inputs() -> sbom.SbomInputs:
    return sbom.SbomInputs(
        name="m", version="1", platform=Platform.parse("linux/amd64"),
        image_digest="sha256:" + "a" * 64, epoch=0, base_name="example.com/python:3.12",
        base_digest="sha256:" + "b" * 64, debs=None,
        wheels=(sbom.Wheel("Six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", "c" * 64),),
    )  # fmt: skip


def test_foreign_base_says_it_has_no_deb_list():
    inp = _inputs()
    data, media_type = sbom.render(inp)
    assert media_type == "application/spdx+json"
    doc = json.loads(data)
    _spdx_valid(doc)
    assert "foreign base image example.com/python:3.12" in doc["comment"]
    assert not [p for p in doc["packages"] if _purl_or_none(p, "pkg:deb/")]
    assert sbom.render(inp) == (data, media_type)  # same inputs, same bytes
    cdx, _ = sbom.render(inp, "cyclonedx")
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cdx.decode()) is None
    assert b"foreign base image" in cdx
    for fmt in ("spdx", "cyclonedx"):  # each stored document valid on its own too
        split = sbom.render_split(inp, fmt)
        assert sbom.render_split(inp, fmt) == split
        for stored in (split.image, split.contents):
            if fmt == "spdx":
                _spdx_valid(json.loads(stored))
            else:
                assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(stored.decode()) is None


def _purl_or_none(pkg: dict, prefix: str) -> bool:
    refs = pkg.get("externalRefs") or []
    return any(r["referenceLocator"].startswith(prefix) for r in refs)


def test_no_sbom_found_is_a_clear_error(tmp_path, cli):
    out = tmp_path / "nosbom"
    _build(f"oci:{out}:m", platforms=["linux/amd64"], sbom=False)
    proc = cli("sbom", f"oci:{out}:m")
    assert proc.returncode == 2 and "no SBOM is attached" in proc.stderr


def test_build_with_sign_key_signs_the_index_and_each_image(
    pushed, registry, tmp_path, cli, cosign, monkeypatch
):
    """build(sign_key=...) as it pushes: the real cosign accepts the tag and every platform
    image by digest; the digests are those of the unsigned build (signatures are beside)."""
    key, pub = keys.generate_key_pair(tmp_path / "build", PASSWORD)
    ref = registry.ref("supply/signed:1")
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    result = _build(ref, sign_key=key)
    assert result.digest == pushed[0].digest
    assert set(result.signed) == {result.digest, *_images(result).values()}
    ok = cosign_verify(cosign, pub, ref)
    assert ok.returncode == 0, ok.stderr
    for digest in _images(result).values():
        by_digest = cosign_verify(cosign, pub, f"{registry.host}/supply/signed@{digest}")
        assert by_digest.returncode == 0, by_digest.stderr
    assert cli("verify", "--key", pub, "--each", ref).returncode == 0


def test_sign_key_for_an_archive_destination_is_refused_before_any_work(tmp_path):
    with pytest.raises(InvalidInput, match="cannot hold signatures"):
        _build(f"oci-archive:{tmp_path / 'x.tar'}", sign_key=tmp_path / "none.key")


def test_a_single_document_attached_by_another_tool_is_printed_as_stored(tmp_path, cli):
    """A referrer holding one whole SBOM (another tool's, or an older ociforge's) is still found,
    and printed as it is: only ociforge's image documents are merged."""
    img = build_image(BlobStore(tmp_path / "store"))
    place, _ = Place.of(f"oci:{tmp_path / 'single'}:m")
    place.write(img, "m")
    doc = b'{"spdxVersion": "SPDX-2.3", "name": "from another tool"}\n'
    art = referrers.artifact(
        img.descriptor(platform=False), sbom.SPDX_MEDIA_TYPE, doc, sbom.SPDX_MEDIA_TYPE
    )
    referrers.attach(place, art)
    proc = cli("sbom", f"oci:{tmp_path / 'single'}:m")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() == doc
    (listed,) = json.loads(cli("sbom", f"oci:{tmp_path / 'single'}:m", "--list").stdout)
    assert listed["part"] == "complete"
    assert cli("sbom", f"oci:{tmp_path / 'single'}:m", "--part", "image").returncode == 2
