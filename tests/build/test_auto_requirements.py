"""``requirements="auto"`` maps the model's top-level imports to installed distributions by
reading only the distributions that can provide them: the same answer as
``importlib.metadata.packages_distributions()``, found afresh on every build."""

from __future__ import annotations

import importlib.metadata as md
import pickle
import sys
import types

import pytest

from ociforge.errors import InvalidInput
from ociforge.model.imports import auto_requirements, distributions_for, providers


def _dist_info(site, name: str, version: str, record: list[str] | None, top_level=None):
    """An installed distribution as pip leaves one: NAME-VERSION.dist-info with METADATA, a
    RECORD (``record``: its paths) and, when given, top_level.txt."""
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir()
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if record is not None:
        (d / "RECORD").write_text("".join(f"{p},,\n" for p in record))
    if top_level is not None:
        (d / "top_level.txt").write_text("".join(f"{t}\n" for t in top_level))
    return d


def test_the_same_as_packages_distributions_for_every_installed_name():
    """Every top-level name of this environment (a real data-science stack, dist-infos with and
    without top_level.txt) maps to the same distributions, in the same order."""
    full = md.packages_distributions()
    assert "sklearn" in full and "numpy" in full  # the example's imports are among them
    assert providers(full) == full
    assert providers(["sklearn", "numpy", "no_such_module_here"]) == {
        "sklearn": full["sklearn"],
        "numpy": full["numpy"],
    }


def test_names_only_in_a_path_or_a_folder_of_another_are_not_provided(tmp_path, monkeypatch):
    """A RECORD naming ``demo_a`` inside another package, or ``demo_a.libs/``, does not provide
    ``demo_a``; a quoted or ``./`` path, a module file and an extension module do; top_level.txt
    is believed as written; all as packages_distributions() has it."""
    site = tmp_path / "site"
    (site / "demo_a").mkdir(parents=True)
    (site / "demo_a" / "__init__.py").write_text("")  # installed: known from this line alone
    _dist_info(site, "demo-a", "1.0", ["demo_a/__init__.py", "demo_a/core.py"])
    _dist_info(site, "demo-gone", "1.1", ["demo_gone/__init__.py"])  # its files deleted since
    _dist_info(site, "Demo-Vendor", "2.0", ["vendorpkg/demo_a/x.py", "demo_a.libs/lib.so"])
    _dist_info(site, "demo-quoted", "3.0", ['"./demo_q/__init__.py"', "demo_mod.py"])
    _dist_info(site, "demo-ext", "4.0", ["demo_ext.cpython-311-x86_64-linux-gnu.so", "x.py"])
    _dist_info(site, "demo-declared", "5.0", ["whatever/__init__.py"], top_level=["demo_a"])
    monkeypatch.syspath_prepend(str(site))
    names = ["demo_a", "demo_gone", "demo_q", "demo_mod", "demo_ext", "vendorpkg", "whatever"]
    full = md.packages_distributions()
    assert providers(names) == {n: full[n] for n in names if n in full}
    assert sorted(providers(["demo_a"])["demo_a"]) == ["demo-a", "demo-declared"]
    assert "Demo-Vendor" in providers(["vendorpkg"])["vendorpkg"]
    assert providers(["demo_q", "demo_mod"]) == {
        "demo_q": ["demo-quoted"],
        "demo_mod": ["demo-quoted"],
    }
    assert distributions_for(["demo_a"]) == {"demo-a": "1.0", "demo-declared": "5.0"}


def test_a_distribution_installed_since_the_last_lookup_is_found(tmp_path, monkeypatch):
    """Nothing is remembered between lookups: a package installed after a build that could not
    map it is found by the next one, with its version."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(InvalidInput, match="demo_late"):
        distributions_for(["demo_late"])
    _dist_info(site, "demo-late", "0.3", ["demo_late/__init__.py"])
    assert distributions_for(["demo_late"]) == {"demo-late": "0.3"}
    _dist_info(site, "demo-later", "0.4", None, top_level=["demo_late"])
    assert distributions_for(["demo_late"]) == {"demo-late": "0.3", "demo-later": "0.4"}


def test_auto_requirements_pin_what_the_pickle_imports(tmp_path, monkeypatch):
    """A pickle referring to an installed module's function gives that distribution's pin."""
    site = tmp_path / "site"
    (site / "demo_auto").mkdir(parents=True)
    (site / "demo_auto" / "__init__.py").write_text("def f(x):\n    return x\n")
    _dist_info(site, "Demo-Auto", "1.2.3", ["demo_auto/__init__.py"])
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr("site.getsitepackages", lambda: [str(site)])
    mod = types.ModuleType("demo_auto")
    mod.__file__ = str(site / "demo_auto" / "__init__.py")
    exec("def f(x):\n    return x\n", mod.__dict__)
    monkeypatch.setitem(sys.modules, "demo_auto", mod)
    reqs, user = auto_requirements(pickle.dumps(mod.f))
    assert reqs == ["Demo-Auto==1.2.3"] and user == []
