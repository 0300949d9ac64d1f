"""``cfgrl --help`` lists every command, ``--version`` works, ``test``/``predict`` are refused clearly."""

import lightning_cfgrl
from lightning_cfgrl.cli.main import CFGRLCLI, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("fit", "validate", "merge", "evaluate", "generate"):
        assert f"  {command} " in text, command
    assert "test" not in text.split("commands:")[1].split() and "predict" not in text


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2 and "usage: cfgrl" in capsys.readouterr().out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cfgrl (lightning-cfgrl) {lightning_cfgrl.__version__}"


def test_test_and_predict_are_not_offered(capsys):
    assert main(["test", "--config", "x.yaml"]) == 2
    assert "cfgrl test is not offered" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["predict"]) == 2
    assert "cfgrl predict is not offered: generation is `cfgrl generate" in capsys.readouterr().err
    assert set(CFGRLCLI.subcommands()) == {"fit", "validate"}
