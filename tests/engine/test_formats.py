"""The data formats through `noah train` / `noah eval`: Pascal VOC (difficult objects ignored in the
loss and the AP), iNaturalist (long-tail metrics, class-balanced sampling)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from noah.cli import main
from noah.engine.distributed import DistEnv
from noah.engine.loaders import TrainLoader
from noah.engine.optim import MultiLabelLoss
from noah.errors import ConfigError
from noah.targets import IGNORE_TARGET


def test_the_multilabel_loss_leaves_ignored_pairs_out() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    target = torch.tensor([[1.0, IGNORE_TARGET, 0.0], [0.0, 1.0, IGNORE_TARGET]])
    valid = torch.tensor([[0, 0], [0, 2], [1, 0], [1, 1]])
    expected = torch.stack([F.binary_cross_entropy_with_logits(logits[i, j], target[i, j]) for i, j in valid]).mean()
    assert torch.allclose(MultiLabelLoss()(logits, target), expected)
    plain = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert torch.equal(MultiLabelLoss()(logits, plain), F.binary_cross_entropy_with_logits(logits, plain))


def test_balanced_sampling_draws_every_class_about_equally_often() -> None:
    class LongTail(torch.utils.data.Dataset):
        labels = [0] * 90 + [1] * 9 + [2]

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):
            return torch.zeros(1), self.labels[i]

    loader = TrainLoader(LongTail(), batch_size=10, workers=0, seed=0, env=DistEnv(), balanced=True)
    drawn = torch.cat([y for epoch in range(20) for _, y in loader.epoch(epoch)])
    counts = torch.bincount(drawn, minlength=3).double() / len(drawn)
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.05)
    assert torch.equal(torch.cat([y for _, y in loader.epoch(3)]), torch.cat([y for _, y in loader.epoch(3)]))
    with pytest.raises(ConfigError, match="single-label"):
        TrainLoader([(torch.zeros(1), torch.ones(2))], 1, 0, 0, DistEnv(), balanced=True)


@pytest.fixture
def small(tmp_path: Path, monkeypatch, tiny_args) -> list[str]:
    monkeypatch.setenv("NOAH_CACHE", str(tmp_path / "cache"))
    return [*tiny_args, "--epochs", "1", "--data-size", "24", "12", "--image-size", "48"]


@pytest.mark.slow
def test_builtin_voc_trains_and_reports_voc_ap(tmp_path: Path, small: list[str], capsys) -> None:
    out = tmp_path / "voc"
    assert main(["train", "--data", "digits-voc", "--output", str(out), *small]) == 0
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert {"mAP", "mAP_11pt", "mAP_area", "CF1", "OF1"} <= set(metrics)
    assert all(0 <= metrics[k] <= 100 for k in ("mAP", "mAP_11pt", "mAP_area"))
    assert main(["train", "--data", "digits-voc", "--output", str(tmp_path / "mix"), "--mixup", "0.2", *small]) == 2
    assert "--difficult positive" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated["mAP_11pt"] == pytest.approx(metrics["mAP_11pt"])


@pytest.mark.slow
def test_builtin_inat_trains_balanced_and_reports_the_long_tail(tmp_path: Path, small: list[str]) -> None:
    out = tmp_path / "inat"
    assert main(["train", "--data", "digits-inat", "--balanced-sampling", "--output", str(out), *small]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_classes"] == 100
    assert {"top1", "top5"} <= set(summary["metrics"])
    assert any(k.startswith("top1_") for k in summary["metrics"]) and any("/" in k for k in summary["metrics"])


@pytest.mark.slow
def test_builtin_reid_trains_identities_and_evaluates_retrieval(tmp_path: Path, small: list[str], capsys) -> None:
    out = tmp_path / "reid"
    args = ["train", "--data", "digits-reid", "--embed-dim", "32", "--image-width", "24", "--output", str(out), *small,
            "--data-size", "40", "30"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "reid" and summary["best"]["epoch"] == 1 and "mAP" in summary["best"]
    metrics = summary["metrics"]
    assert {"rank1", "rank5", "rank10", "mAP", "queries", "gallery"} <= set(metrics)
    assert 0 < metrics["queries"] and metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"] <= 100
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--json", "--device", "cpu", "--embedding-pool", "average"]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated["queries"] == metrics["queries"] and 0 <= evaluated["mAP"] <= 100


def test_the_reid_embedding_pools_where_the_head_attends() -> None:
    import noah

    model = noah.create_model("test_resnet", num_classes=5, embed_dim=8).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.embed(model.forward_features(x))
        attention = model.forward_with_maps(x).attention.mean(dim=(1, 2))  # (B, h, w)
        expected = (features * attention[:, None]).sum(dim=(2, 3))
        assert torch.allclose(model.forward_embedding(x), expected, atol=1e-6)
        assert torch.allclose(model.forward_embedding(x, "average"), features.mean(dim=(2, 3)), atol=1e-6)
        gap = noah.create_model("test_resnet", num_classes=5, embed_dim=8, head="gap").eval()
        gap_features = gap.embed(gap.forward_features(x)).mean(dim=(2, 3))
        assert torch.allclose(gap.forward_embedding(x), gap_features, atol=1e-6)  # GAP heads always average
        assert torch.allclose(gap.forward_head(gap.forward_features(x), pre_logits=True), gap_features, atol=1e-6)
