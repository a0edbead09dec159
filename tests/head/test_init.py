"""The public names of the head package, and the old ones that must keep working."""

from __future__ import annotations

import importlib
import sys

import noah
import noah.head
from noah.head import cpu_kernel, layout, module


def test_public_names_are_the_package_objects():
    from noah.head import NOAHHead, NOAHOutput, split_channels

    assert noah.NOAHHead is NOAHHead is module.NOAHHead
    assert noah.NOAHOutput is NOAHOutput is module.NOAHOutput
    assert split_channels is layout.split_channels
    assert set(noah.head.__all__) >= {"NOAHHead", "NOAHOutput", "split_channels", "register_impl", "available_impls"}
    assert all(hasattr(noah.head, name) for name in noah.head.__all__)


def test_noah_cpu_kernel_is_the_moved_module():
    """``noah.cpu_kernel`` (the module's old place) is the same module object, so patching
    ``noah.cpu_kernel.X`` changes what the head uses."""
    from noah import cpu_kernel as old_name

    assert old_name is noah.cpu_kernel is cpu_kernel
    assert importlib.import_module("noah.cpu_kernel") is sys.modules["noah.cpu_kernel"] is cpu_kernel
    for name in ("fused_available", "fused_status", "kernel_disabled", "fused_logits", "fused_head_logits"):
        assert callable(getattr(noah.cpu_kernel, name))
