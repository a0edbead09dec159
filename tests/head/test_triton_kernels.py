"""The Triton kernels themselves (noah.head.triton_kernels): they lower to GPU code, and the
dropout mask they draw.

The numbers of the kernels are tested through the head in test_triton_impl.py. The interpreter
runs Python, not the GPU compiler, so the lowering test compiles the kernels for NVIDIA GPUs
(sm_80 and sm_90, bf16/fp32/fp64, the tiles a ResNet-50-sized head gets) through Triton's
front end and GPU-dialect passes, in a subprocess where Triton is not in interpreter mode. No
GPU is needed for that; it catches what the interpreter lets through (types, layouts, ``tl.dot``
operand shapes).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import noah

pytest.importorskip("triton", reason="the triton package is not installed (Linux + CUDA wheels ship it)")
from noah.head import triton_kernels  # noqa: E402  (after the importorskip)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

_LOWER = r'''
import json, sys
import torch
import triton.language as tl
from triton._C.libtriton import ir
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from noah.head import triton_kernels as K
from noah.head.triton_impl import choose_tiles

ACC = {torch.float64: ("fp64", tl.float64)}
NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp64"}
STATS = ("max_ptr", "denom_ptr", "pooled_ptr", "grad_ptr", "dwk_ptr", "dwv_ptr", "dbk_ptr", "dbv_ptr")


def signature(kernel, dtype, constexprs):
    acc = ACC.get(dtype, ("fp32", tl.float32))[0]
    types = {}
    for name in kernel.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name.endswith("_ptr"):
            types[name] = "*" + (acc if name in STATS else NAMES[dtype])
        else:
            types[name] = {"seed": "i64", "p": "fp32"}.get(name, "i32")
    return types


def lower(kernel, dtype, precision, dropout, arch):
    tiles = choose_tiles(256, 49, 1000, 4, 256, 256, dtype, torch.device("cpu"))  # ResNet-50's head
    constexprs = dict(DROPOUT=dropout, BL=tiles.block_l, BM=tiles.block_m, BC=tiles.block_c,
                      ACC=ACC.get(dtype, ("fp32", tl.float32))[1], PRECISION=precision)
    if "BCW" in kernel.arg_names:
        constexprs["BCW"] = tiles.block_cw
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    options = backend.parse_options({})
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    source = ASTSource(kernel, signature(kernel, dtype, constexprs), constexprs)
    module = source.make_ir(target, options, backend.get_codegen_implementation(options), backend.get_module_map(),
                            context)
    stages = {}
    backend.add_stages(stages, options, source.language)
    metadata = {}
    for stage in ("ttir", "ttgir"):
        module = stages[stage](module, metadata)
    return "triton_gpu" in str(module) or "ttg." in str(module)


done = []
for dtype, precision, dropout, arch in json.loads(sys.argv[1]):
    dtype = getattr(torch, dtype)
    for kernel in (K._forward_kernel, K._backward_weights_kernel, K._backward_inputs_kernel):
        assert lower(kernel, dtype, precision, dropout, arch), (kernel.fn.__name__, dtype)
        done.append([kernel.fn.__name__, str(dtype), precision, dropout, arch])
print(json.dumps(done))
'''


@pytest.mark.slow
def test_kernels_lower_for_nvidia_gpus():
    # bf16 on Hopper and Ampere (different tensor-core instructions; fp16 lowers like bf16),
    # fp32 in IEEE precision (TF32 is the same path with another dot precision), fp64 (no tensor cores)
    configs = [("bfloat16", "ieee", True, 90), ("bfloat16", "ieee", True, 80), ("float32", "ieee", True, 90),
               ("float64", "ieee", False, 90)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    src = str(Path(noah.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-c", _LOWER, json.dumps(configs)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lowered = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(lowered) == 3 * len(configs)


def test_dropout_mask_keeps_the_expected_share():
    p = 0.3
    mask = triton_kernels.dropout_scales(2, 2, 64, 64, 12345, p, DEVICE)
    kept = float((mask > 0).double().mean())
    assert abs(kept - (1 - p)) < 4 * math.sqrt(p * (1 - p) / mask.numel())  # 4 sigma
    assert torch.allclose(mask[mask > 0], torch.tensor(1 / (1 - p), device=DEVICE))
    again = triton_kernels.dropout_scales(2, 2, 64, 64, 12345, p, DEVICE)
    assert torch.equal(mask, again)
    other = triton_kernels.dropout_scales(2, 2, 64, 64, 12346, p, DEVICE)
    assert 0.3 < float((mask != other).double().mean()) < 0.6  # independent draws disagree 2p(1-p) = 42 %
    # element (b, n, m, l) draws from Philox key seed + b*N + n at counter m*L + l
    for b, n in [(0, 0), (0, 1), (1, 1)]:
        alone = triton_kernels.dropout_scales(1, 1, 64, 64, 12345 + 2 * b + n, p, DEVICE)
        assert torch.equal(alone[0, 0], mask[b, n])
