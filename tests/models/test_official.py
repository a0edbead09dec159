"""Official NOAH checkpoints (SPEC §3): DDP-prefixed training dicts load into create_model's models."""

from __future__ import annotations

import pytest
import torch

import noah
from noah import CheckpointError
from noah.models.official import load_official_checkpoint


def official_state_dict(model: noah.NOAHModel) -> dict[str, torch.Tensor]:
    """What the official code saves: backbone keys at top level, head.query/value, under module."""
    out = {}
    for key, value in model.state_dict().items():
        key = key[len("backbone."):] if key.startswith("backbone.") else key
        out[f"module.{key}"] = value.clone()
    return out


def save_official(path, state):
    torch.save({"epoch": 100, "state_dict": state, "acc": 71.8, "best_acc": 71.8, "optimizer": {}}, path)


@pytest.mark.parametrize("head", ["noah", "gap"])
def test_round_trip_through_official_format(tmp_path, head):
    source = noah.create_model("resnet18", num_classes=10, head=head).eval()
    state = official_state_dict(source)
    assert "module.conv1.weight" in state and "module.layer1.0.conv1.weight" in state
    if head == "noah":
        assert state["module.head.query.weight"].shape == (4 * 10, 256 // 4, 1, 1)
    else:
        assert "module.head.fc.weight" in state
    path = tmp_path / "noah_resnet18.pth.tar"
    save_official(path, state)
    target = noah.create_model("resnet18", num_classes=10, head=head).eval()
    report = load_official_checkpoint(target, path)
    assert report.ok
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(target(x), source(x))


def test_baseline_fc_keys_map_to_head(tmp_path):
    source = noah.create_model("resnet18", num_classes=10, head="gap")
    state = {k.replace("head.fc.", "fc."): v for k, v in official_state_dict(source).items()}
    save_official(tmp_path / "r18.pth", state)
    target = noah.create_model("resnet18", num_classes=10, head="gap")
    load_official_checkpoint(target, tmp_path / "r18.pth")
    torch.testing.assert_close(target.head.fc.weight, source.head.fc.weight)


def test_create_model_loads_official_weights_from_a_path(tmp_path):
    source = noah.create_model("mobilenetv2_035", num_classes=10)
    save_official(tmp_path / "mnv2.pth", official_state_dict(source))
    model = noah.create_model("mobilenetv2_035", num_classes=10, pretrained=str(tmp_path / "mnv2.pth"))
    torch.testing.assert_close(model.head.value.weight, source.head.value.weight)


def test_mismatches_are_reported_by_key(tmp_path):
    source = noah.create_model("resnet18", num_classes=10)
    state = official_state_dict(source)
    del state["module.layer4.1.bn2.weight"]
    state["module.extra.weight"] = torch.zeros(1)
    save_official(tmp_path / "bad.pth", state)
    target = noah.create_model("resnet18", num_classes=20)
    before = target.head.query.weight.clone()
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(target, tmp_path / "bad.pth")
    message = str(info.value)
    assert "missing: backbone.layer4.1.bn2.weight" in message
    assert "unexpected: extra.weight" in message
    assert "head.query.weight (checkpoint (40, 64, 1, 1), model (80, 64, 1, 1))" in message
    assert "\n" not in message
    assert torch.equal(target.head.query.weight, before)  # strict failure leaves the model untouched
    report = load_official_checkpoint(target, tmp_path / "bad.pth", strict=False)
    assert report.missing and report.unexpected and report.mismatched
    torch.testing.assert_close(target.backbone.conv1.weight, source.backbone.conv1.weight)


def test_unreadable_files_are_checkpoint_errors(tmp_path):
    model = noah.create_model("test_resnet", num_classes=3, num_heads=2)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_official_checkpoint(model, tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_official_checkpoint(model, tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "nostate.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_official_checkpoint(model, tmp_path / "nostate.pth")
