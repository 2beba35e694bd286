"""The `jam-flow` dispatcher: help lists every subcommand and each one resolves to a callable."""

import importlib

import pytest

from jam_flow import cli


def test_help_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_subcommand_resolves(name):
    module_name, func_name, _ = cli.SUBCOMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    assert callable(func)


def test_import_models_does_not_import_lightning():
    import subprocess
    import sys

    code = "import sys, jam_flow.models; assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
