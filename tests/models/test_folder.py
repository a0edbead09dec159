"""The saved-folder format: noah and timm both load what save_pretrained writes."""

import json

import pytest
import timm
import torch

import noah
from noah.errors import CheckpointError, ConfigError
from noah.models import save_pretrained
from noah.models.folder import CONFIG_NAME, WEIGHTS_NAME, read_config

DATA = {"input_size": (3, 64, 64), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2), "crop_pct": 1.0, "interpolation": "bicubic"}


def perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = perturbed(noah.create_model("mobilenetv2_035", num_classes=3, head_dropout=0.1))
    folder = save_pretrained(model, tmp_path_factory.mktemp("runs") / "mnv2", class_names=["cat", "dog", "owl"], data_config=DATA)
    return model, folder, torch.randn(2, 3, 64, 64)


def test_noah_loads_a_folder_by_itself(saved):
    model, folder, x = saved
    loaded = noah.create_model(pretrained=str(folder)).eval()
    assert loaded.num_classes == 3 and loaded.head.dropout.p == 0.1 and loaded.load_report.ok
    cfg = loaded.pretrained_cfg
    assert cfg["label_names"] == ("cat", "dog", "owl") and cfg["mean"] == (0.5, 0.4, 0.3) and cfg["input_size"] == (3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_timm_loads_a_folder_the_timm_ways(saved):
    """timm's local-dir source reads config.json; pretrained_cfg_overlay takes the folder or its weights file."""
    model, folder, x = saved
    via_local_dir = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    via_folder = timm.create_model("noah_mobilenetv2_035", pretrained=True, pretrained_cfg_overlay=dict(file=str(folder))).eval()
    via_file = timm.create_model(
        "noah_mobilenetv2_035", pretrained=True, pretrained_cfg_overlay=dict(file=str(folder / WEIGHTS_NAME)), num_classes=3,
        drop_rate=0.1,
    ).eval()
    with torch.no_grad():
        for loaded in (via_local_dir, via_folder, via_file):
            torch.testing.assert_close(loaded(x), model(x))
    assert timm.data.resolve_data_config(model=via_local_dir)["mean"] == (0.5, 0.4, 0.3)


def test_a_folder_fine_tunes_with_a_new_head(saved):
    model, folder, _ = saved
    tuned = noah.create_model("noah_mobilenetv2_035", num_classes=7, pretrained=str(folder))
    assert tuned.head.num_classes == 7 and "label_names" not in tuned.pretrained_cfg
    torch.testing.assert_close(tuned.backbone.conv_stem.weight, model.backbone.conv_stem.weight)
    with pytest.raises(ConfigError, match=r"holds a noah_mobilenetv2_035 model, not resnet18"):
        noah.create_model("resnet18", pretrained=str(folder))


def test_any_timm_backbone_round_trips_with_its_settings(tmp_path):
    """Backbone settings (here a ViT's image size) and the narrow-DeiT pre-logits layer are saved too."""
    vit = perturbed(noah.create_model("test_vit", num_classes=2, num_heads=2, img_size=32, pre_logits_size=48))
    folder = save_pretrained(vit, tmp_path / "vit")
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["architecture"] == "test_vit" and config["model_args"]["img_size"] == 32
    assert config["model_args"]["pre_logits_size"] == 48
    loaded = noah.create_model(pretrained=str(folder)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), vit(x))


def test_bad_folders_are_one_line_errors(tmp_path, saved):
    model, _, _ = saved
    with pytest.raises(ConfigError, match="3 class names for a model with 4 classes"):
        save_pretrained(noah.create_model("test_resnet", num_classes=4, num_heads=2), tmp_path / "x", class_names=["a", "b", "c"])
    assert not (tmp_path / "x").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_config(tmp_path / "broken")
    (tmp_path / "broken" / CONFIG_NAME).write_text(json.dumps({"architecture": "noah_resnet18", "task": 3}))
    with pytest.raises(CheckpointError, match="'task' must name the task"):
        noah.create_model(pretrained=str(tmp_path / "broken"))
    with pytest.raises(ConfigError, match="needs a model name"):
        noah.create_model()


def test_ablation_heads_round_trip_with_their_options(tmp_path):
    """A head with ablation switches or a POCA variant is rebuilt with them, by noah and by timm."""
    model = perturbed(noah.create_model("mobilenetv2_035", num_classes=3, head_options={"variant": "d", "merge": "avg"}))
    folder = save_pretrained(model, tmp_path / "ablation")
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["model_args"]["head_options"] == {"variant": "d", "merge": "avg"}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(noah.create_model(pretrained=str(folder)).eval()(x), model(x))
        torch.testing.assert_close(timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x), model(x))
