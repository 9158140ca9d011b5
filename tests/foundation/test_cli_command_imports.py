"""The command line imports only the command it runs (each command's module imports what that
command needs: ``inspect`` need not load the builder), and parses it exactly as the parser of
every command does; help and a mistyped command still list every command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ociforge.cli import _command, build_parser

ARGVS = [
    ["build", "model.py:predict", "--platform", "linux/amd64", "--grpc"],
    ["inspect", "--json", "oci:out:iris"],
    ["copy", "oci:out:iris", "oci:other:iris"],
    ["base", "build", "python3.11-bookworm", "--platform", "linux/arm64", "--to", "oci:b"],
]


def _imported_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_a_command_imports_its_own_module_only():
    mods = _imported_after(
        "from ociforge.cli import main\ntry:\n    main(['inspect', '--help'])\n"
        "except SystemExit:\n    pass\n"
    )
    commands = [m for m in mods if m.startswith("ociforge.cli.") and m != "ociforge.cli._common"]
    assert commands == ["ociforge.cli.inspect"]
    assert "ociforge.builder.build" not in mods and "ociforge.bases.debian" not in mods


@pytest.mark.parametrize("argv", ARGVS, ids=lambda a: a[0])
def test_one_command_parses_as_all_commands_do(argv):
    assert vars(build_parser(argv[0]).parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_the_command_is_found_past_verbose_and_not_past_other_options():
    assert _command(["-v", "build", "m.py"]) == "build"
    assert _command(["--verbose", "inspect", "x"]) == "inspect"
    assert _command(["--help", "build"]) is None  # the help lists every command
    assert _command(["--version"]) is None and _command([]) is None


def test_help_and_a_mistyped_command_still_name_every_command(capsys):
    with pytest.raises(SystemExit):
        build_parser(_command(["--help"])).parse_args(["--help"])
    listed = capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser(_command(["buidl"])).parse_args(["buidl"])
    refused = capsys.readouterr().err
    for name in ("assemble", "build", "copy", "inspect", "run", "weights"):
        assert name in listed and f"'{name}'" in refused
