"""Mixed precision choices."""

from __future__ import annotations

import pytest
import torch

from noah.engine.precision import autocast_factory
from noah.errors import ConfigError


def test_autocast_choices() -> None:
    _, dtype = autocast_factory("auto", torch.device("cpu"))
    assert dtype is None
    ctx, dtype = autocast_factory("bf16", torch.device("cpu"))
    assert dtype == torch.bfloat16
    with ctx():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="fp8"):
        autocast_factory("fp8", torch.device("cpu"))
