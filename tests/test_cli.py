"""The ``so3krates`` command itself: version, help, and every subcommand's help."""

import subprocess
import sys

import pytest

from so3krates import __version__
from so3krates.cli.main import SUBCOMMANDS, build_parser, main


def test_version_and_help_through_the_installed_entry_point():
    out = subprocess.run([sys.executable, "-m", "so3krates.cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"so3krates {__version__}"
    out = subprocess.run([sys.executable, "-m", "so3krates.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout


def test_every_built_subcommand_has_documented_help(capsys):
    parser = build_parser()
    built = [name for name in SUBCOMMANDS if name in parser._subparsers._group_actions[0].choices]
    assert {"train", "evaluate"} <= set(built)
    for name in built:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert f"so3krates {name}" in text and "--" in text
