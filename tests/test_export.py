"""Export: the saved folder, ONNX (checked in onnxruntime) and TorchScript, each round-tripped."""

import json

import pytest
import torch

import noah
from noah.errors import ConfigError
from noah.export import export_model, export_onnx, export_torchscript
from noah.models.folder import CONFIG_NAME, WEIGHTS_NAME

SIDE = 64
DATA = {"input_size": (3, SIDE, SIDE), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2), "crop_pct": 1.0, "interpolation": "bicubic"}


@pytest.fixture(scope="module")
def trained():
    """A 3-class NOAH ResNet18 whose weights differ from any fresh initialisation."""
    torch.manual_seed(3)
    model = noah.create_model("resnet18", num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(tmp_path, trained):
    import onnx
    import onnxruntime

    result = export_model(trained, tmp_path / "run", fmt="onnx", class_names=["a", "b", "c"], data_config=DATA)
    check = result.check
    assert check.ok and check.max_abs_diff <= check.tolerance and check.batch_size == 3  # exported with 2
    assert "tolerance" in check.describe() and check.path == tmp_path / "run" / "model.onnx"
    graph = onnx.load(str(check.path))
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
    session = onnxruntime.InferenceSession(str(check.path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, SIDE, SIDE)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(session.run(None, {"images": x.numpy()})[0]), trained(x), rtol=1e-4, atol=1e-4)
    assert (tmp_path / "run" / WEIGHTS_NAME).is_file() and isinstance(trained.head, noah.NOAHHead)
    assert trained.head.impl == "fast"  # the export used a plain-path copy


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_scripts_and_reloads(tmp_path, trained):
    check = export_torchscript(trained, tmp_path / "model.pt", input_size=(3, SIDE, SIDE))
    assert check.ok and check.method == "TorchScript (scripted)"
    loaded = torch.jit.load(str(tmp_path / "model.pt"))
    x = torch.randn(2, 3, SIDE + 32, SIDE)  # scripted: any size
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x), rtol=1e-4, atol=1e-5)


def test_exports_never_overwrite(tmp_path, trained):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        export_model(trained, tmp_path / "taken")
    (tmp_path / "model.onnx").write_bytes(b"old")
    with pytest.raises(ConfigError, match="already exists"):
        export_onnx(trained, tmp_path / "model.onnx")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "keep me" and (tmp_path / "model.onnx").read_bytes() == b"old"
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export_model(trained, tmp_path / "new", fmt="tflite")
    assert not (tmp_path / "new").exists()


def test_safetensors_export_writes_the_config(tmp_path, trained):
    result = export_model(trained, tmp_path / "out", class_names=["a", "b", "c"], task="multilabel", data_config=DATA)
    config = json.loads((tmp_path / "out" / CONFIG_NAME).read_text())
    assert config == result.config and result.check is None
    assert config["architecture"] == "noah_resnet18" and config["label_names"] == ["a", "b", "c"]
    assert config["model_args"] == {"head": "noah", "num_heads": 4, "key_ratio": 0.5, "head_dropout": 0.1}
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.4, 0.3] and config["task"] == "multilabel"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_falls_back_to_tracing(tmp_path, trained, monkeypatch):
    def refuse(module):
        raise RuntimeError("this backbone does not script")

    monkeypatch.setattr(torch.jit, "script", refuse)
    check = export_torchscript(trained, tmp_path / "traced.pt", input_size=(3, SIDE, SIDE))
    assert check.ok and check.method == f"TorchScript (traced at {SIDE}x{SIDE})"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pvt_tiny_050", "deit_tiny_050_patch16_224"])
def test_onnx_export_of_token_models(tmp_path, name):
    """PVT (this project's backbone) and a ViT (tokens laid out on the grid) export and match."""
    model = noah.create_model(name, num_classes=4, img_size=SIDE, pre_logits_size=None).eval()
    check = export_onnx(model, tmp_path / "m.onnx", input_size=(3, SIDE, SIDE))
    assert check.ok, check.describe()
