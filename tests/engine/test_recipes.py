"""Recipes (SPEC §5): layering recipe <- YAML <- flags, and validation against the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from noah.engine.config import TrainConfig
from noah.engine.recipes import RECIPE_HELP, RECIPES, resolve_config
from noah.errors import ConfigError


def test_layers_override_in_order(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("recipe: mobilenet\nepochs: 7\nbatch-size: 12\ndata: /somewhere\n")
    config = resolve_config(config_file=yaml_file, overrides={"batch_size": 3})
    assert config.recipe == "mobilenet"
    assert config.lr == RECIPES["mobilenet"]["lr"]  # recipe over defaults
    assert config.epochs == 7  # YAML over recipe
    assert config.batch_size == 3  # flags over YAML
    assert config.momentum == TrainConfig().momentum
    # an explicit recipe wins over the file's
    assert resolve_config("resnet", yaml_file).recipe == "resnet"


def test_default_is_the_demo_on_builtin_digits() -> None:
    config = resolve_config()
    assert config.recipe == "demo" and config.data == "digits" and config.model == "test_resnet"


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_is_valid_and_documented(name: str) -> None:
    config = resolve_config(name, overrides={"data": "x"})
    assert config.recipe == name and name in RECIPE_HELP
    for key, value in RECIPES[name].items():
        if key == "data":
            continue
        assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"recipe": "nope"}, "unknown recipe"),
        ({"overrides": {"learning_rate": 1}}, "unknown configuration key.*command line: learning_rate"),
        ({"overrides": {"head": "max"}}, "command line.*head must be one of"),
        ({"overrides": {"epochs": 0}}, "epochs must be"),
        ({"recipe": "resnet"}, "needs a dataset"),
    ],
)
def test_bad_configs_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_config(**kwargs)


def test_bad_yaml_files(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("a: [1\n")
    (tmp_path / "badvalue.yaml").write_text("epochs: many\n")
    (tmp_path / "badkey.yaml").write_text("epoch: 3\n")
    for name, match in (("list.yaml", "mapping"), ("broken.yaml", "not valid YAML"), ("missing.yaml", "not found"),
                        ("badvalue.yaml", "badvalue.yaml: epochs must be an integer"),
                        ("badkey.yaml", "unknown configuration key.*badkey.yaml: epoch")):
        with pytest.raises(ConfigError, match=match):
            resolve_config(config_file=tmp_path / name)
