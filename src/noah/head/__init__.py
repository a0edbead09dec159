"""The NOAH head: pairwise object category attention (POCA) over a feature map.

For a feature map ``X`` with ``C`` channels at ``L = H*W`` positions, ``M`` classes, ``N`` POCA
blocks and key ratio ``r`` (SPEC §2):

* the first ``Ck = int(C*r)`` channels feed the key embedding, the other ``Cv = C - Ck`` the
  value embedding (second-level split);
* each part is cut into ``N`` equal consecutive channel groups (first-level split);
* block ``n`` projects its key group to ``K_n`` (``M x L``) and its value group to ``V_n``
  (``M x L``), both 1x1 projections with bias;
* ``A_n = softmax_L(K_n)``; the logits are ``y = sum_n sum_l A_n[:, l] * V_n[:, l]``.

:class:`NOAHHead` (:mod:`~noah.head.module`) holds the parameters in the official layout and
hands the computation to a registered implementation (:mod:`~noah.head.registry`); all of them
compute the same numbers:

``"plain"`` (:mod:`~noah.head.plain`)
    the formula as written (grouped ``conv2d``, softmax, product, sum) -- the reference.
``"fast"`` (:mod:`~noah.head.fast`, default)
    batched matmuls over one channels-last view of ``X`` with an explicit softmax; for CPU
    inference, kernels that never materialise the attention: the compiled ``noah._poca``
    (:mod:`~noah.head.cpu_kernel`, float32) or cache-sized chunks of PyTorch ops; for float32
    CPU training, the compiled forward + backward of :mod:`~noah.head.cpu_train`, which keeps
    no map for backward; for CUDA tensors (training and inference), the Triton kernels of the
    ``"triton"`` implementation.
``"lean"`` (:mod:`~noah.head.lean`)
    the fast implementation with a custom autograd function for training that keeps only the
    input for backward and recomputes the maps class chunk by class chunk.
``"triton"`` (:mod:`~noah.head.triton_impl`)
    Triton kernels for forward and backward that save no ``(B, N, M, L)`` map for backward
    (recomputed tile by tile, FlashAttention-style); CUDA tensors, or CPU tensors under
    Triton's interpreter (``TRITON_INTERPRET=1``).

Each module below registers what it defines when imported; a new implementation or kernel is a
new module and one import line here.

Other heads, by name (:mod:`~noah.head.catalog`: ``build_head``, the names ``create_model(head=...)``
offers): ``"noah"``, the ``"gap"`` baseline, ``"sa"`` (:mod:`~noah.head.self_attention`, the
paper's Table XI) and ``"csra"`` (:mod:`~noah.head.csra`); the ``"noah"`` head's ablation switches
(:class:`NOAHHead`'s ``head_split``, ``kv_split``, ``attention``, ``merge``) and POCA variants
(a)-(f) of Table X (``variant``: :mod:`~noah.head.reduced`, :mod:`~noah.head.shared`,
:mod:`~noah.head.prelinear`; (c) and (d) are NOAHHead switches).
"""

from noah.head.layout import split_channels
from noah.head.module import ATTENTIONS, MERGES, NOAHHead, NOAHOutput
from noah.head.catalog import (
    HeadType,
    POCAVariant,
    build_head,
    head_options,
    head_type,
    head_types,
    register_head_type,
    register_variant,
    variants,
)
from noah.head.registry import (
    HeadImpl,
    LogitsKernel,
    available_impls,
    get_impl,
    register_impl,
    register_kernel,
)

# implementations and kernels register themselves on import, one line each
# (kernels are tried in their `order`: triton/triton_cuda 5, lean 10, cpu_train 15, cpu_fused 20,
# chunked 30)
from noah.head import fast  # noqa: F401  (impl "fast", kernel "chunked")
from noah.head import plain  # noqa: F401  (impl "plain")
from noah.head import lean  # noqa: F401  (impl "lean", kernel "lean")
from noah.head import cpu_kernel  # noqa: F401  (kernel "cpu_fused")
from noah.head import cpu_train  # noqa: F401  (kernel "cpu_train")
from noah.head import triton_impl  # noqa: F401  (impl "triton", kernels "triton" and "triton_cuda")

# head types and POCA variants register themselves on import too ("noah", "gap", (c), (d): catalog)
from noah.head import reduced  # noqa: F401  (variants (a), (b))
from noah.head import shared  # noqa: F401  (variant (e))
from noah.head import prelinear  # noqa: F401  (variant (f))
from noah.head import self_attention  # noqa: F401  (head "sa")
from noah.head import csra  # noqa: F401  (head "csra")

__all__ = [
    "NOAHHead", "NOAHOutput", "split_channels", "HeadImpl", "LogitsKernel", "available_impls", "get_impl",
    "register_impl", "register_kernel", "ATTENTIONS", "MERGES", "HeadType", "POCAVariant", "build_head",
    "head_options", "head_type", "head_types", "register_head_type", "register_variant", "variants",
]
