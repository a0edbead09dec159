"""A short training run ends with the same numbers whichever CPU path trains the head.

The demo recipe (test_resnet on the built-in digit scenes), shortened to 2 epochs on 64 images,
``--deterministic``, no dropout: trained by impl ``fast`` with the compiled training kernel, by
``fast`` with ``NOAH_DISABLE_KERNEL=1`` (PyTorch autograd) and by ``plain``. Every epoch's
training loss and validation metrics agree to 1e-4.
"""

from __future__ import annotations

import json

import pytest

from noah.cli import main
from noah.head import cpu_train

RUN = ["train", "--epochs", "2", "--data-size", "64", "32", "--deterministic", "--workers", "0", "--quiet",
       "--device", "cpu", "--amp", "none"]


def _numbers(run_dir) -> dict[str, float]:
    """Training losses and validation metrics of every epoch (not timings or rates)."""
    found = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        epoch = json.loads(line)
        found[f"{epoch['epoch']}/train/loss"] = epoch["train"]["loss"]
        found.update({f"{epoch['epoch']}/val/{k}": v for k, v in epoch["val"].items()})
    return found


@pytest.mark.slow
@pytest.mark.skipif(not cpu_train.train_available(), reason="the compiled training kernel is not usable here")
def test_every_cpu_path_trains_to_the_same_metrics(tmp_path, monkeypatch):
    calls = []
    real = cpu_train._poca.train_backward
    monkeypatch.setattr(cpu_train._poca, "train_backward", lambda *a: calls.append(1) or real(*a), raising=True)
    results = {}
    for name, impl, disable in (("kernel", "fast", False), ("torch", "fast", True), ("plain", "plain", False)):
        if disable:
            monkeypatch.setenv("NOAH_DISABLE_KERNEL", "1")
        else:
            monkeypatch.delenv("NOAH_DISABLE_KERNEL", raising=False)
        before = len(calls)
        assert main([*RUN, "--head-impl", impl, "--output", str(tmp_path / name)]) == 0
        assert (len(calls) > before) == (name == "kernel"), name  # the kernel trained that run and only that one
        results[name] = _numbers(tmp_path / name)
    assert len(results["kernel"]) == 10
    for name in ("torch", "plain"):
        assert results[name].keys() == results["kernel"].keys()
        for key, value in results["kernel"].items():
            assert results[name][key] == pytest.approx(value, abs=1e-4), (name, key)
