"""The registry of head implementations and logits kernels (noah.head.registry)."""

from __future__ import annotations

import pytest
import torch

from noah import ConfigError, NOAHHead
from noah.head import registry
from noah.head.registry import (
    HeadImpl, LogitsKernel, available_impls, get_impl, kernels_for, register_impl, register_kernel,
)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test are dropped after it."""
    monkeypatch.setattr(registry, "_IMPLS", dict(registry._IMPLS))
    monkeypatch.setattr(registry, "_KERNELS", list(registry._KERNELS))
    monkeypatch.setattr(registry, "_KERNELS_BY_IMPL", {})


class Doubled(HeadImpl):
    """The plain formula with the logits doubled: numbers no built-in implementation gives."""

    name = "test_doubled"

    def logits_and_maps(self, head, x):
        logits, attention, values = get_impl("plain").logits_and_maps(head, x)
        return 2 * logits, attention, values


def test_a_registered_impl_is_what_set_impl_selects(scratch_registry):
    register_impl(Doubled())
    assert available_impls()[-1] == NOAHHead.IMPLS[-1] == "test_doubled"
    head = NOAHHead(16, 5, 2).eval()
    x = torch.randn(2, 16, 3, 3)
    with torch.no_grad():
        expected = head.set_impl("plain")(x)
        assert head.set_impl("test_doubled") is head and "impl='test_doubled'" in head.extra_repr()
        torch.testing.assert_close(head(x), 2 * expected)
        out = head(x, return_maps=True)
        torch.testing.assert_close(out.logits, 2 * expected)
        assert out.attention.shape == (2, 2, 5, 3, 3)
    assert NOAHHead(16, 5, 2, impl="test_doubled").impl == "test_doubled"


def test_unknown_impl_is_a_one_line_error_listing_the_registered_ones(scratch_registry):
    register_impl(Doubled())
    for make in (lambda: NOAHHead(16, 5, 2, impl="turbo"), lambda: NOAHHead(16, 5, 2).set_impl("turbo")):
        with pytest.raises(ConfigError) as info:
            make()
        message = str(info.value)
        assert message.startswith("unknown NOAH head impl 'turbo'; expected one of ") and "\n" not in message
        assert message.endswith(", ".join(available_impls()))
        assert {"fast", "plain", "lean", "test_doubled"} <= set(available_impls())


def test_names_are_registered_once(scratch_registry):
    with pytest.raises(ConfigError, match="'fast'.*already taken"):
        register_impl(type("Again", (HeadImpl,), {"name": "fast"})())
    with pytest.raises(ConfigError, match="empty or already taken"):
        register_impl(HeadImpl())
    with pytest.raises(ConfigError, match="kernel 'chunked'.*already taken"):
        register_kernel(LogitsKernel("chunked", ("fast",), lambda head, x, call: False, lambda head, x: None))


def test_built_in_kernels_are_tried_in_order():
    assert [k.name for k in kernels_for("fast")] == ["triton_cuda", "cpu_train", "cpu_fused", "chunked"]
    assert [k.name for k in kernels_for("lean")] == ["lean", "cpu_fused", "chunked"]
    assert [k.name for k in kernels_for("triton")] == ["triton"]
    assert kernels_for("plain") == ()


def test_a_registered_kernel_runs_where_it_applies_and_can_hand_back(scratch_registry):
    """A kernel is tried before the built-in ones (order 0), only by the implementations it
    names, only where ``applies`` holds; returning ``None`` hands over to the exact path."""
    calls = []

    def run(head, x):
        calls.append(x.shape[0])
        return None if x.shape[0] == 2 else torch.full((x.shape[0], head.num_classes), 7.0)

    register_kernel(LogitsKernel("test_kernel", ("fast",), lambda head, x, call: call.inference, run, order=0))
    next_run = lambda head, x: calls.append("next")  # noqa: E731  (returns None: hands back)
    register_kernel(LogitsKernel("test_next", ("fast",), lambda head, x, call: True, next_run, order=1))
    assert [k.name for k in kernels_for("fast")][:2] == ["test_kernel", "test_next"]
    head = NOAHHead(16, 5, 2, impl="fast").eval()
    plain = NOAHHead(16, 5, 2, impl="plain").eval()
    plain.load_state_dict(head.state_dict())
    x = torch.randn(3, 16, 3, 3)
    with torch.no_grad():
        assert torch.equal(head(x[:1]), torch.full((1, 5), 7.0))  # the kernel's answer
        torch.testing.assert_close(head(x[:2]), plain(x[:2]))  # handed back: the exact path, not the next kernel
        assert head(x[:0]).shape == (0, 5)  # an empty batch skips the kernels
        assert head(x[:1], return_maps=True).logits.shape == (1, 5)  # maps never go through kernels
        head.set_impl("lean")(x[:1])  # not a kernel of "lean"
    head.set_impl("fast")(x[:1])  # autograd on: test_kernel does not apply, test_next does
    assert calls == [1, 2, "next"]
