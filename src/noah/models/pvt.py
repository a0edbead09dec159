"""Pyramid Vision Transformer v1 (Wang et al., ICCV 2021), which timm does not ship.

Four stages of transformer blocks over shrinking token grids (strides 4, 8, 16, 32). Attention
in stage ``i`` is spatial-reduction attention: keys and values come from the token grid
downsampled by ``sr_ratios[i]`` with a strided conv followed by LayerNorm.

``forward_features`` returns the last stage as a ``(B, C, H, W)`` map (or, with a class token,
the ``(B, 1 + H*W, C)`` tokens, class token first). The paper's NOAH models drop the class token.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import checkpoint
from timm.models._features import feature_take_indices
from torch import nn

__all__ = ["PyramidVisionTransformer", "pvt_tiny_args", "resize_pos_embed"]


def pvt_tiny_args(width: float = 1.0) -> dict:
    """Constructor arguments of PVT-Tiny with every channel width scaled by ``width``."""
    return dict(
        embed_dims=tuple(int(round(d * width)) for d in (64, 128, 320, 512)),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        depths=(2, 2, 2, 2),
        sr_ratios=(8, 4, 2, 1),
    )


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` conv, then LayerNorm; ``(B, C, H, W)`` to tokens ``(B, h*w, D)``."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


def resize_pos_embed(pos_embed: torch.Tensor, extra_tokens: int, grid: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(extra-token part, patch part) of a ``(1, extra + side*side, D)`` position embedding, the
    patch part bilinearly resized to ``grid`` when it differs from the stored square grid.

    A leaf for ``torch.fx`` (its branch depends on the input's size).
    """
    extra, patches = pos_embed[:, :extra_tokens], pos_embed[:, extra_tokens:]
    side = int(math.sqrt(patches.shape[1]) + 0.5)
    if side * side != grid[0] * grid[1] or grid[0] != grid[1]:
        spatial = patches.transpose(1, 2).reshape(1, -1, side, side)
        spatial = F.interpolate(spatial, size=[grid[0], grid[1]], mode="bilinear", align_corners=False)
        patches = spatial.flatten(2).transpose(1, 2)
    return extra, patches


torch.fx.wrap("resize_pos_embed")


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from a ``sr_ratio``-times coarser grid."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float, sr_ratio: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        self.sr: nn.Module | None = None
        self.norm: nn.Module | None = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape[0], x.shape[1], x.shape[2]
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        context = x
        if self.sr is not None and self.norm is not None:
            spatial = x.transpose(1, 2).reshape(b, c, grid[0], grid[1])
            context = self.norm(self.sr(spatial).flatten(2).transpose(1, 2))
        kv = self.kv(context).reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """Pre-norm transformer block with spatial-reduction attention and an MLP."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float, drop_path: float, sr_ratio: int
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, qkv_bias, attn_drop, drop, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Patch embedding, learned position embedding and the blocks of one pyramid level."""

    def __init__(
        self, in_chans: int, dim: int, patch_size: int, num_patches: int, extra_tokens: int, blocks: list[Block], drop_rate: float
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + extra_tokens, dim))
        self.extra_tokens = extra_tokens
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, cls_token: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """A ``(B, C, H, W)`` map to this level's tokens ``(B, [1 +] h*w, D)`` and grid ``(h, w)``;
        ``cls_token`` (``(1, 1, D)``) is prepended when given."""
        tokens, grid = self.patch_embed(x)
        extra_pos, patch_pos = resize_pos_embed(self.pos_embed, self.extra_tokens, grid)
        tokens = tokens + patch_pos
        if cls_token is not None:
            tokens = torch.cat([cls_token.expand(tokens.shape[0], -1, -1) + extra_pos, tokens], dim=1)
        tokens = self.pos_drop(tokens)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                tokens = checkpoint(block, tokens, grid)
            else:
                tokens = block(tokens, grid)
        return tokens, grid


class PyramidVisionTransformer(nn.Module):
    """PVT v1. With ``num_classes=0`` it is a headless backbone for :class:`NOAHModel`."""

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        depths: Sequence[int] = (2, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        class_token: bool = False,
        global_pool: str = "",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.num_prefix_tokens = 1 if class_token else 0
        self.global_pool = global_pool
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, start, chans, size = [], 0, in_chans, img_size
        self.feature_info = []
        for i, dim in enumerate(embed_dims):
            patch = 4 if i == 0 else 2
            size //= patch
            blocks = [
                Block(dim, num_heads[i], mlp_ratios[i], qkv_bias, drop_rate, attn_drop_rate, rates[start + j], sr_ratios[i])
                for j in range(depths[i])
            ]
            extra = self.num_prefix_tokens if i == len(embed_dims) - 1 else 0
            stages.append(Stage(chans, dim, patch, size * size, extra, blocks, drop_rate))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"stages.{i}"))
            start, chans = start + depths[i], dim
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1])) if class_token else None
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = dict(
            input_size=(in_chans, img_size, img_size), pool_size=(img_size // 32, img_size // 32),
            mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=0.875, interpolation="bicubic",
            num_classes=num_classes, first_conv="stages.0.patch_embed.proj", classifier="head",
        )
        self.apply(self._init_weights)
        for stage in self.stages:
            trunc_normal_(stage.pos_embed, std=0.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = {f"stages.{i}.pos_embed" for i in range(len(self.stages))}
        return names | ({"cls_token"} if self.cls_token is not None else set())

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        blocks = r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)\.(?:patch_embed|pos_embed)", (0,)),
            (r"^cls_token|^norm", (99999,)),
        ]
        return dict(stem=r"^stages\.0\.(?:patch_embed|pos_embed)", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def _to_map(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        patches = tokens[:, tokens.shape[1] - grid[0] * grid[1]:]  # drop a class token
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` to the last stage: ``(B, C, H/32, W/32)``, or tokens
        ``(B, 1 + L, C)`` when the model has a class token."""
        tokens = x
        grid = (x.shape[2], x.shape[3])
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            tokens, grid = stage(x, self.cls_token if i == last else None)
            x = self._to_map(tokens, grid)
        tokens = self.norm(tokens)
        if self.cls_token is not None:
            return tokens
        return self._to_map(tokens, grid)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs ``(B, C_i, H/2^(i+2), W/2^(i+2))`` picked by ``indices`` (all by default),
        and the ``forward_features`` output unless ``intermediates_only``. ``norm`` applies the
        final LayerNorm to the last stage's map."""
        if output_fmt != "NCHW":
            raise ValueError("PyramidVisionTransformer gives NCHW features only")
        take, max_index = feature_take_indices(len(self.stages), indices)
        last = max_index if intermediates_only or stop_early else len(self.stages) - 1
        intermediates = []
        tokens = x
        grid = (x.shape[2], x.shape[3])
        for i, stage in enumerate(self.stages):
            if i > last:
                break
            tokens, grid = stage(x, self.cls_token if i == len(self.stages) - 1 else None)
            x = self._to_map(tokens, grid)
            if i in take:
                normed = norm and i == len(self.stages) - 1
                intermediates.append(self._to_map(self.norm(tokens), grid) if normed else x)
        if intermediates_only:
            return intermediates
        tokens = self.norm(tokens)
        final = tokens if self.cls_token is not None else self._to_map(tokens, grid)
        return final, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True) -> List[int]:
        """Drop the stages after the last one ``indices`` takes (and the head); returns the taken indices."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.head = nn.Identity()
            self.num_classes = 0
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.cls_token is not None:
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
