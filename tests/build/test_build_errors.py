"""Bad input to the model build: a clear error naming what and where, and nothing written."""

from __future__ import annotations

import textwrap

import pytest

import ociforge
from ociforge.builder.assemble import Addition, assemble
from ociforge.errors import OciforgeError
from ociforge.transports.transport import write_to
from tests.build.test_model_forms import load_source
from tests.support.registry import RegistryServer
from tests.wheels.wheelmaker import make_wheel

SIMPLE = """
    def predict(x):
        return x
"""


def test_unpicklable_model(tmp_path):
    ns = load_source(
        tmp_path,
        """
        import threading
        LOCK = threading.Lock()
        class Guarded:
            def __init__(self):
                self.lock = threading.Lock()
            def predict(self, x):
                with self.lock:
                    return x
    """,
    )
    with pytest.raises(OciforgeError, match="cannot be pickled"):
        ociforge.build(ns["Guarded"](), to=f"oci:{tmp_path / 'out'}:m")
    assert not (tmp_path / "out").exists()


def test_failing_test_sample_refuses_to_build(tmp_path):
    ns = load_source(
        tmp_path,
        """
        def predict(x):
            return 1 / x
    """,
    )
    with pytest.raises(OciforgeError, match="test on the sample failed"):
        ociforge.build(ns["predict"], to=f"oci:{tmp_path / 'out'}:m", test_sample=0)
    assert not (tmp_path / "out").exists()


def test_requirement_missing_for_one_platform_names_it(tmp_path, monkeypatch):
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "onlyx86", "1.0", tag="py3-none-manylinux_2_17_x86_64")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    ns = load_source(tmp_path, SIMPLE)
    with pytest.raises(OciforgeError) as err:
        ociforge.build(
            ns["predict"],
            platforms=["linux/amd64", "linux/arm64"],
            requirements=["onlyx86==1.0"],
            to=f"oci:{tmp_path / 'out'}:m",
        )
    message = str(err.value)
    assert "onlyx86" in message and ("arm64" in message or "aarch64" in message)
    assert not (tmp_path / "out").exists()


def test_base_without_python_is_refused(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "motd").write_text("hi\n")
    bare = assemble(None, [Addition(str(tmp_path / "etc"), "/etc")], platforms=["linux/amd64"])
    write_to(bare, f"oci:{tmp_path / 'bare'}:v1")
    ns = load_source(tmp_path, SIMPLE)
    with pytest.raises(OciforgeError, match="(?i)python") as err:
        ociforge.build(
            ns["predict"], base=f"oci:{tmp_path / 'bare'}:v1", to=f"oci:{tmp_path / 'out'}:m"
        )
    assert "declare" in str(err.value).lower()
    assert not (tmp_path / "out").exists()
    # declared as the message says, the build goes through and records the declared interpreter
    result = ociforge.build(
        ns["predict"],
        base=f"oci:{tmp_path / 'bare'}:v1",
        to=f"oci:{tmp_path / 'out'}:m",
        python="3.11.2",
        python_path="/opt/py/bin/python3.11",
        libc="glibc 2.36",
    )
    img = result.image.select("linux/amd64")
    assert img.config.config.entrypoint[0] == "/opt/py/bin/python3.11"
    assert img.layers[0] == bare.layers[0]  # the base layer, reused by digest


def test_unwritable_destination_fails_before_any_work(tmp_path, cli):
    model = tmp_path / "model.py"
    model.write_text(textwrap.dedent(SIMPLE))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    out = cli("build", f"{model}:predict", "--to", f"oci:{ro / 'out'}:m", unprivileged=True)
    assert out.returncode == 2
    assert "not a writable folder" in out.stderr and "Traceback" not in out.stderr
    assert list(ro.iterdir()) == []


def test_cli_errors_name_the_file_and_object(tmp_path, cli):
    model = tmp_path / "model.py"
    model.write_text(textwrap.dedent(SIMPLE))
    out = cli("build", f"{model}:nothing", "--to", f"oci:{tmp_path / 'out'}")
    assert out.returncode == 2 and "defines no 'nothing'" in out.stderr and "predict" in out.stderr
    out = cli("build", f"{tmp_path / 'missing.py'}:predict")
    assert out.returncode == 2 and "does not exist" in out.stderr
    (tmp_path / "broken.py").write_text("raise RuntimeError('no data here')\n")
    out = cli("build", f"{tmp_path / 'broken.py'}:predict")
    assert out.returncode == 2 and "no data here" in out.stderr


def test_wrong_password_pushes_nothing(tmp_path):
    ns = load_source(tmp_path, SIMPLE)
    with RegistryServer(tmp_path / "reg", mode="tls") as reg:
        with pytest.raises(OciforgeError) as err:
            ociforge.build(
                ns["predict"],
                to=reg.ref("models/x:1"),
                ca_bundle=str(reg.ca_file),
                auth=(reg.username, "wrong-password"),
            )
        message = str(err.value)
        assert reg.host in message and "wrong-password" not in message
        assert reg.blob_digests("models/x") == set()
