"""Models from a config: settings a backbone cannot take, pretrained weights, a run's model read back."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

import noah
from noah.engine.config import TrainConfig
from noah.engine.model import build_model, head_impl_problem, load_pretrained, load_run, state_dict_mismatch
from noah.engine.recipes import resolve_config
from noah.engine.rundir import RunDir
from noah.errors import CheckpointError, ConfigError


@pytest.mark.parametrize("impl", ["fast", "plain", "lean"])
def test_head_impl_reaches_the_noah_head(impl: str) -> None:
    model = build_model(resolve_config("demo", None, {"head_impl": impl}), num_classes=10)
    assert model.head.impl == impl
    gap = build_model(resolve_config("demo", None, {"head": "gap", "head_impl": impl}), num_classes=10)
    assert gap(torch.randn(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize("overrides,check", [
    ({"variant": "d", "kv_split": False}, lambda head: head.kernel_size == 3 and not head.kv_split),
    ({"attention": "classes", "merge": "max"}, lambda head: not head.is_standard),
    ({"head": "csra", "csra_heads": 4, "csra_lambda": 0.3}, lambda head: (head.num_heads, head.lam) == (4, 0.3)),
    ({"head": "sa", "sa_dim": 8}, lambda head: head.dim == 8),
])
def test_head_options_reach_the_head(overrides, check) -> None:
    model = build_model(resolve_config("demo", None, overrides), num_classes=10)
    assert check(model.head)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_a_head_option_the_head_has_no_use_for_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"the gap head has no option attention \(it takes none\)"):
        build_model(resolve_config("demo", None, {"head": "gap", "attention": "classes"}), num_classes=10)


@pytest.mark.parametrize("changes,message", [
    ({"model": "test_vit", "output_stride": 8}, "model test_vit cannot take --output-stride 8: its backbone "
                                                "(VisionTransformer) has no output_stride setting"),
    ({"model": "shufflenetv2_100", "drop_path": 0.1}, "model shufflenetv2_100 cannot take --drop-path 0.1"),
])
def test_a_setting_the_backbone_cannot_take_is_an_error_naming_model_and_option(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(TrainConfig(**changes), 3)
    assert str(info.value).startswith(message)


def test_image_size_reaches_backbones_that_take_it_and_only_transforms_otherwise() -> None:
    vit = build_model(TrainConfig(model="test_vit", image_size=64), 3)
    assert vit(torch.randn(1, 3, 64, 64)).shape == (1, 3)  # position embeddings built for 64 px
    cnn = build_model(TrainConfig(model="test_resnet", image_size=48), 3)
    assert cnn(torch.randn(1, 3, 48, 48)).shape == (1, 3)


def test_a_fixed_size_backbone_without_img_size_refuses_another_image_size(monkeypatch) -> None:
    from noah.engine import model as model_module

    fixed = noah.models.BackboneFacts("FixedNet", frozenset({"num_classes"}), True, (3, 224, 224))
    monkeypatch.setattr(model_module, "backbone_facts", lambda name: fixed)
    with pytest.raises(ConfigError, match="cannot take --image-size 64: its backbone \\(FixedNet\\) only runs at 224"):
        build_model(TrainConfig(model="test_resnet", image_size=64), 3)


def test_create_model_refuses_a_backbone_setting_up_front() -> None:
    with pytest.raises(ConfigError, match="test_vit cannot take output_stride=16"):
        noah.create_model("test_vit", num_classes=3, output_stride=16)


def test_pretrained_official_checkpoint_with_other_class_count(tmp_path: Path) -> None:
    """An official-format checkpoint (DDP ``module.`` keys under ``state_dict``) for 7 classes
    fine-tunes a 3-class model: backbone loaded, head left fresh."""
    source = noah.create_model("test_resnet", num_classes=7)
    official = {"epoch": 3, "state_dict": {f"module.{k.removeprefix('backbone.')}": v
                                           for k, v in source.state_dict().items()}}
    path = tmp_path / "official.pth.tar"
    torch.save(official, path)
    target = noah.create_model("test_resnet", num_classes=3)
    fresh_head = {k: v.clone() for k, v in target.head.state_dict().items()}
    message = load_pretrained(target, str(path))
    assert "head newly initialised" in message
    for k, v in target.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(v, source.state_dict()[k]), k
    assert all(torch.equal(v, fresh_head[k]) for k, v in target.head.state_dict().items())


def _write_run(root: Path, config: TrainConfig, seed: int) -> RunDir:
    run_dir = RunDir(root)
    run_dir.claim(continuing=False, overwrite=False)
    run_dir.write_config(config)
    run_dir.write_classes("multiclass", ["a", "b", "c"])
    torch.manual_seed(seed)
    run_dir.save_weights(build_model(config, 3))
    run_dir.release()
    return run_dir


def test_a_runs_weights_come_from_its_own_folder_whatever_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    config = dataclasses.replace(resolve_config(), data_size=(4, 2))
    run_a = _write_run(tmp_path / "a", config, seed=1)
    _write_run(tmp_path / "b", config, seed=2)
    monkeypatch.chdir(tmp_path / "b")  # holds another run's model.safetensors
    model, info = load_run(str(tmp_path / "a"))
    assert info.weights == run_a.file(RunDir.WEIGHTS)
    expected = noah.engine.checkpoint.load_weights(run_a.file(RunDir.WEIGHTS))
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    # a user-given path is relative to the current directory, and must exist there
    model_b, info_b = load_run(str(tmp_path / "a"), checkpoint=RunDir.WEIGHTS)
    assert info_b.weights == Path(RunDir.WEIGHTS) and os.path.samefile(info_b.weights, tmp_path / "b" / RunDir.WEIGHTS)
    with pytest.raises(CheckpointError, match="checkpoint not found: nowhere.safetensors"):
        load_run(str(tmp_path / "a"), checkpoint="nowhere.safetensors")
    with pytest.raises(CheckpointError, match="no weights in .*looked for best.pt"):
        load_run(str(tmp_path / "a"), checkpoint="best")


def test_weights_that_do_not_fit_are_named_by_key() -> None:
    small = noah.create_model("test_resnet", num_classes=3)
    other = noah.create_model("test_resnet", num_classes=5).state_dict()
    problem = state_dict_mismatch(small, other)
    assert "shape mismatch: head.query.weight (checkpoint (20, 12, 1, 1), model (12, 12, 1, 1))" in problem
    assert state_dict_mismatch(small, small.state_dict()) == ""


def test_a_triton_head_where_triton_cannot_run(tmp_path: Path, monkeypatch, capsys) -> None:
    """Training refuses --head-impl triton up front; a run trained with it evaluates with 'fast'."""
    import noah.head.triton_impl as triton_impl
    from noah.cli import main

    monkeypatch.setattr(triton_impl, "unavailable_reason", lambda x: f"no Triton for {x.device.type} here")
    model = build_model(resolve_config("demo", None, {"head_impl": "triton"}), num_classes=10)
    assert head_impl_problem(model, "cpu") == "no Triton for cpu here"
    assert head_impl_problem(build_model(resolve_config(), num_classes=10), "cpu") is None
    code = main(["train", "--head-impl", "triton", "--data-size", "10", "2", "--epochs", "1", "--quiet",
                 "--output", str(tmp_path / "refused")])
    assert code == 2 and "--head-impl triton: no Triton for cpu here" in capsys.readouterr().err
    assert not (tmp_path / "refused" / RunDir.WEIGHTS).exists()
    config = dataclasses.replace(resolve_config(), data_size=(4, 2), head_impl="triton")
    _write_run(tmp_path / "trained", config, seed=1)
    loaded, _ = load_run(str(tmp_path / "trained"))
    assert loaded.head.impl == "fast"
