"""TrainConfig: one schema for defaults, types, choices, flags, YAML and run folders."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from noah.engine.config import TrainConfig, add_config_arguments, config_fields, given_options, load_yaml_config
from noah.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser


def test_every_option_has_exactly_one_flag_with_its_help_and_choices() -> None:
    parser = _parser()
    by_dest = {a.dest: a for a in parser._actions if a.dest != "help"}
    for f in config_fields():
        if not f.metadata["flag"]:
            assert f.name not in by_dest
            continue
        action = by_dest[f.name]
        assert f"--{f.name.replace('_', '-')}" in action.option_strings
        assert f.metadata["help"] in action.help and action.default is argparse.SUPPRESS
    assert set(by_dest["head_impl"].choices) >= {"fast", "plain", "lean"}
    assert set(by_dest["head"].choices) == {"noah", "gap", "sa", "csra"}
    assert "--aa" in by_dest["auto_augment"].option_strings


def test_flags_parse_to_typed_values_and_only_given_ones_are_reported() -> None:
    args = _parser().parse_args(["--lr", "0.01", "--no-ema", "--scale", "0.5", "1", "--data-size", "10", "4",
                                 "--decay-milestones", "3", "5"])
    given = given_options(args)
    assert given == {"lr": 0.01, "ema": False, "scale": [0.5, 1.0], "data_size": [10, 4], "decay_milestones": [3, 5]}
    config = TrainConfig.from_dict(given)
    assert config.scale == (0.5, 1.0) and config.data_size == (10, 4) and config.decay_milestones == (3, 5)
    assert config.epochs == TrainConfig().epochs  # not given: the default


@pytest.mark.parametrize("values,key", [
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"lr": "fast"}, "lr"),
    ({"lr": 0}, "lr"),
    ({"epochs": 1.5}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"hflip": 2.0}, "hflip"),
    ({"head": "max"}, "head"),
    ({"head_impl": "turbo"}, "head_impl"),
    ({"scale": [0.5]}, "scale"),
    ({"ema": "yes"}, "ema"),
    ({"output_stride": 4}, "output_stride"),
    ({"threshold": 1.0}, "threshold"),
])
def test_a_bad_key_or_value_is_a_config_error_naming_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as info:
        TrainConfig.from_dict(values, "my.yaml")
    assert "my.yaml" in str(info.value) and "\n" not in str(info.value)


def test_replace_validates_again() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        dataclasses.replace(TrainConfig(), batch_size=0)


def test_yaml_numbers_written_as_strings_and_dashes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nbatch-size: 8\nscale: [0.2, 1]\n")  # YAML 1.1 reads 1e-4 as a string
    config = TrainConfig.from_dict(load_yaml_config(path), str(path))
    assert config.lr == pytest.approx(1e-4) and config.batch_size == 8 and config.scale == (0.2, 1.0)


def test_to_dict_round_trips_and_is_plain() -> None:
    config = TrainConfig(model="test_vit", scale=(0.3, 1.0), data_size=(5, 3))
    plain = config.to_dict()
    assert plain["scale"] == [0.3, 1.0] and isinstance(plain["decay_milestones"], list)
    assert TrainConfig.from_dict(plain) == config


def test_model_differences_name_each_model_defining_option() -> None:
    a, b = TrainConfig(model="resnet18"), TrainConfig(model="mobilenetv2_035", num_heads=8, lr=0.5)
    assert a.model_differences(b) == ["model resnet18 vs mobilenetv2_035", "num_heads None vs 8"]
