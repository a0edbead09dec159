"""Shared test settings: deterministic, single-process-friendly torch.

Without a GPU, noah's Triton kernels are tested on CPU tensors through Triton's interpreter
(tests/head/test_triton_*.py). Triton reads ``TRITON_INTERPRET`` when it is first imported, which
happens while the test modules are collected (timm imports it), so it is set here, first.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():  # importing torch does not import triton
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
