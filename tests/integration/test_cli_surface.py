"""What a newcomer types first: --help, --version, grouprl config."""

import pytest
import yaml

from grouprl import __version__
from grouprl.cli.main import build_parser, main
from grouprl.config import load_config


def subcommands() -> dict:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return {choice.dest: choice.help for choice in action._choices_actions}


def test_help_lists_every_subcommand_with_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    parser_commands = set(next(a for a in build_parser()._actions if a.dest == "command").choices)
    assert set(subcommands()) == parser_commands and len(parser_commands) >= 10
    for name, help_text in subcommands().items():
        assert help_text and help_text.strip(), name
        assert f"    {name} " in text, name


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"grouprl {__version__}"


def test_train_help_says_how_to_list_the_keys(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "grouprl config" in " ".join(capsys.readouterr().out.split())


def test_config_prints_the_documented_resolved_config(tmp_path, capsys):
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[lines.index("  lr: 0.0002") - 1] == "  # Peak learning rate of AdamW."
    assert "#   beta: 0.04" in text  # the preset's resolved fields, under algo
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    assert load_config(path) == load_config()
    assert yaml.safe_load(text)["train"]["steps"] == 200


def test_config_with_an_algorithm_and_overrides(capsys):
    assert main(["config", "--algorithm", "dapo", "train.steps=7", "learning_rate=1e-5",
                 "data.system_prompt='Think...'", "rewards=[{name: correct_answer, weight: 2}]"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert (data["algorithm"], data["train"]["steps"], data["train"]["lr"]) == ("dapo", 7, 1e-5)
    assert (data["data"]["system_prompt"] == "Think..."
            and data["rewards"] == [{"name": "correct_answer", "weight": 2}])
    assert main(["config", "--algorithm", "nope"]) == 2
