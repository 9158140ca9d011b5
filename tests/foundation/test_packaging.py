"""A non-editable install carries every package: setup.cfg lists them by hand (three of them live
in folders of other names), so a new subpackage left out of the list works in the editable
install the tests use and fails with ModuleNotFoundError for a user of ``pip install .``."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    dirs = dict(
        line.split("=")
        for line in (x.replace(" ", "") for x in cfg["options"]["package_dir"].splitlines())
        if line
    )
    found = set()
    for top, folder in dirs.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((top, *rel.parts)))
    assert found, "no package folder found"
    assert found - listed == set(), "packages missing from setup.cfg [options] packages"
    assert listed - found == set(), "setup.cfg lists packages that have no folder"
