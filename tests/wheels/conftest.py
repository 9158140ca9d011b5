"""Fixtures for the wheel tests: a hermetic find-links folder of tiny wheels, and a wheel cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wheelmaker import make_wheel  # noqa: E402

from ociforge.python.resolve import IndexSettings, ResolveOptions  # noqa: E402


@pytest.fixture(scope="session")
def links(tmp_path_factory) -> Path:
    """Wheels a resolver can find with --no-index --find-links, no network."""
    d = tmp_path_factory.mktemp("links")
    make_wheel(d, "onlyx86", "1.0", "cp311-cp311-manylinux_2_17_x86_64")
    make_wheel(d, "armonly")
    make_wheel(d, "top", requires=('armonly; platform_machine == "aarch64"', "helper>=1"))
    make_wheel(
        d,
        "helper",
        "1.2",
        scripts={"helper-cli": "helper:main"},
        files={"helper/main.py": b"def main():\n    print('hi')\n"},
        data_scripts={"helper-sh": b"#!python\nprint('data script')\n"},
    )
    make_wheel(d, "sdistonly", "2.0", "py2-none-any")
    make_wheel(d, "native", "0.5", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64")
    make_wheel(d, "native", "0.5", "cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64")
    return d


@pytest.fixture
def local_options(links) -> ResolveOptions:
    return ResolveOptions(
        IndexSettings(no_index=True, find_links=[str(links)]), use_pip_config=False
    )
