"""The `noah` command: models table, info, one-line errors."""

from __future__ import annotations

import os
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
    assert "CPU kernel" in out and "CPU training" in out and "GPU kernels" in out


def test_info_says_why_the_triton_kernels_are_not_used(capsys, monkeypatch):
    monkeypatch.setenv("NOAH_DISABLE_TRITON", "1")
    assert main(["info", "test_resnet", "--num-classes", "3", "--img-size", "32"]) == 0
    assert "GPU kernels  disabled (NOAH_DISABLE_TRITON" in capsys.readouterr().out


def test_unknown_model_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "noah", "info", "no_such_model"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown model 'no_such_model'" in result.stderr and "Traceback" not in result.stderr


def test_a_closed_pipe_ends_quietly():
    """`noah models | head -1`: no BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # every row is its own write, after the reader has gone
    proc = subprocess.Popen([sys.executable, "-m", "noah", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141  # 128 + SIGPIPE, as `yes | head -1` ends


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    import noah.commands.models as models_command

    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(models_command, "run", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "noah models: interrupted\n"
