"""The `noah` command: models table, info, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from noah.cli import main


def test_models_prints_all_26_rows(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[0] in {m.name for m in __import__("noah").list_models()}]
    assert len(rows) == 26
    assert "resnet18" in out and "11.69 /  11.70" in out
    assert "printed count not reproducible" in out


def test_info_describes_a_model(capsys):
    assert main(["info", "resnet18", "--num-classes", "10", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "(B, 512, 2, 2) at 64x64 input" in out and "num_heads=4" in out and "paper" in out


def test_unknown_model_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "noah", "info", "no_such_model"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown model 'no_such_model'" in result.stderr and "Traceback" not in result.stderr
