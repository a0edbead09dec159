"""`noah export --run DIR`: a trained run (of a paper model, so timm knows it as noah_*) round-trips
as a model folder and as checked ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import noah
from noah.cli import main
from noah.engine.model import load_run


@pytest.fixture(scope="module")
def trained_run(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", "--data", str(image_folder), "--epochs", "1", "--output", str(out), "--model", "mobilenetv2_035",
                 "--image-size", "64", "--batch-size", "4", "--workers", "0", "--quiet", "--device", "cpu"]) == 0
    return out


def test_a_run_exports_to_a_folder_that_loads_back_with_the_same_logits(trained_run: Path, tmp_path: Path,
                                                                         capsys) -> None:
    folder = tmp_path / "model"
    assert main(["export", "--run", str(trained_run), "--output", str(folder)]) == 0
    assert str(folder) in capsys.readouterr().out
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == ["c0", "c1", "c2"] and config["task"] == "multiclass"
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    model, _ = load_run(str(trained_run))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(noah.create_model(pretrained=str(folder)).eval()(x), expected, atol=1e-6)
        via_timm = timm.create_model("noah_mobilenetv2_035", pretrained=True, pretrained_cfg_overlay={"file": str(folder)})
        assert torch.allclose(via_timm.eval()(x), expected, atol=1e-6)
    assert main(["export", "--run", str(trained_run), "--output", str(folder)]) == 2  # never overwritten
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_onnx_export_is_checked_against_pytorch(trained_run: Path, capsys) -> None:
    assert main(["export", "--run", str(trained_run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "model.onnx (ONNX opset 18): max |difference| to PyTorch" in out and out.rstrip().splitlines()[1].endswith(": ok")
    assert "[torch.onnx]" not in out  # the exporter's progress lines stay quiet
    assert (trained_run / "export-onnx" / "model.onnx").is_file()
