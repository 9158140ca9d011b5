"""The debugging variant: the default base plus a shell, pip and tools; never the default."""

from __future__ import annotations

from ociforge.bases.base import build, default_recipe, load_recipe
from tests.support.rootfs import run, unpack


def test_debug_variant_has_a_shell_and_pip(tmp_path):
    recipe = load_recipe("python3.11-bookworm-debug")
    assert not recipe.default
    assert default_recipe("3.11").name == "python3.11-bookworm"
    img = build(recipe, ["linux/amd64"])
    image = next(iter(img.values()))
    root = unpack(image, tmp_path / "rootfs")
    script = "echo shell ok && python3 -m pip --version && ps --version && id -u"
    proc = run(root, ["/bin/sh", "-c", script], "linux/amd64", env=image.config.config.env_dict())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "shell ok"
    assert lines[1].startswith("pip ") and "python 3.11" in lines[1]
    assert lines[-1] == "65532"
    # the default base has none of it
    default = next(iter(build(default_recipe("3.11"), ["linux/amd64"]).values()))
    droot = unpack(default, tmp_path / "default")
    assert not (droot / "usr/bin/sh").exists() and not (droot / "usr/bin/bash").exists()


def test_recipe_symlinks_under_bin_land_under_usr():
    """A real bin/ directory in the system layer would hide the bin -> usr/bin link below it."""
    import dataclasses

    from ociforge.bases import base

    recipe = dataclasses.replace(load_recipe("python3.11-bookworm"), symlinks={"/bin/sh": "bash"})
    entries = base._system_entries(recipe, base.read_lock(recipe, "amd64"), {}, set())
    paths = {e.path for e in entries}
    assert "usr/bin/sh" in paths and not any(p == "bin" or p.startswith("bin/") for p in paths)
