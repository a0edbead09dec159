"""Put a classification head (NOAH or GAP + linear) on any backbone, timm style.

:class:`NOAHModel` owns a headless ``backbone`` and a ``head``. It brings whatever the backbone's
features look like -- NCHW maps, NHWC maps, or token sequences with class / distillation /
register tokens -- to one ``(B, C, H, W)`` feature map, which both heads consume, so a NOAH model
and its GAP baseline differ only in the head.

The model follows timm's model contract (``forward_features`` / ``forward_head(pre_logits=...)``,
``reset_classifier``, ``forward_intermediates``, ``feature_info``, ``group_matcher``, ...). Two
calls depend on tensor values and are leaves for ``torch.fx`` (:func:`call_head`,
:func:`apply_layout`), so that the backbone traces while the head keeps its kernel dispatch;
for TorchScript, :meth:`NOAHModel.__prepare_scriptable__` swaps the NOAH head for its
plain-formula twin (:class:`~noah.models.scripting.ScriptablePOCA`).
"""


import copy
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.fx
from timm.layers import ClassifierHead, SelectAdaptivePool2d, register_notrace_module
from timm.models._features import feature_take_indices
from torch import nn

from noah.errors import ConfigError, ShapeError
from noah.head import NOAHHead, NOAHOutput, build_head, head_types
from noah.models.official import translate_official_keys
from noah.models.scripting import ScriptablePOCA

__all__ = ["NOAHModel", "HEAD_TYPES", "GLOBAL_POOLS", "EMBEDDING_POOLS", "FeatureMapLayout", "TokenPreLogits",
           "PositionEmbedding"]

#: the heads a model can have (noah.head's registered head types: noah, gap, sa, csra)
HEAD_TYPES = head_types()
#: how :meth:`NOAHModel.forward_embedding` pools the embedding map over positions
EMBEDDING_POOLS = ("attention", "average")
#: pooling of the pre-logits features (and of the GAP head); '' keeps the map
GLOBAL_POOLS = ("avg", "max", "avgmax", "")

# timm's fx tracer (and anyone passing timm's notrace lists) treats the head as one node
register_notrace_module(NOAHHead)


class FeatureMapLayout(nn.Module):
    """Backbone output to the ``(B, C, H, W)`` map: NCHW as is, NHWC permuted, tokens
    ``(B, T, C)`` stripped of ``num_prefix_tokens`` and laid out on the patch grid.

    The grid of ``L`` patch tokens of an ``(H, W)`` image is the first of ``(H // s, W // s)``,
    ``(ceil(H / s), ceil(W / s))`` (``s``: the patch ``stride``) and ``(sqrt L, sqrt L)`` whose
    area is ``L``.
    """

    def __init__(self, num_features: int, num_prefix_tokens: int, channels_last: bool, stride: Tuple[int, int]) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_prefix_tokens = num_prefix_tokens
        self.channels_last = channels_last
        self.stride = stride

    def grid(self, num_tokens: int, image_size: List[int]) -> Tuple[int, int]:
        sh, sw = self.stride
        candidates: List[Tuple[int, int]] = []
        if sh > 0 and sw > 0:
            candidates.append((image_size[0] // sh, image_size[1] // sw))
            candidates.append(((image_size[0] + sh - 1) // sh, (image_size[1] + sw - 1) // sw))
        side = int(math.sqrt(num_tokens) + 0.5)
        candidates.append((side, side))
        for h, w in candidates:
            if h * w == num_tokens:
                return h, w
        raise ShapeError(
            "cannot lay " + str(num_tokens) + " patch tokens of a " + str(image_size[0]) + "x" + str(image_size[1])
            + " input out on a grid; expected the patch grid of the backbone's patch embedding"
        )

    def forward(self, features: torch.Tensor, image_size: List[int]) -> torch.Tensor:
        c = self.num_features
        if features.dim() == 4:
            if features.shape[1] == c and not self.channels_last:
                return features
            if features.shape[-1] == c:
                return features.permute(0, 3, 1, 2)
        elif features.dim() == 3 and features.shape[-1] == c:
            tokens = features[:, self.num_prefix_tokens :]
            h, w = self.grid(tokens.shape[1], image_size)
            return tokens.transpose(1, 2).reshape(tokens.shape[0], c, h, w)
        raise ShapeError(
            "the backbone returned features of shape " + str(list(features.shape)) + "; expected per-position "
            "features with " + str(c) + " channels as (B, C, H, W), (B, H, W, C) or tokens (B, T, C)"
        )


class TokenPreLogits(nn.Module):
    """The official narrow DeiT's pre-logits layer, per position: ``tanh(W x + b)`` over the
    channels of a ``(B, C, H, W)`` map, ``C -> out_features`` (keys ``fc.weight``/``fc.bias``)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class PositionEmbedding(nn.Module):
    """A linear embedding applied at every position of a ``(B, C, H, W)`` map, ``C -> out_features``
    (key ``fc``). Averaged over the positions it is the same as a linear layer after global
    average pooling -- the re-ID models' "FC after pooling" -- so a GAP head and a NOAH head can
    share it."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def call_head(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``head(x)``; one node (a leaf) when traced by ``torch.fx``, so that the head's dispatch on
    tensor values never reaches the tracer."""
    return head(x)


def apply_layout(layout: FeatureMapLayout, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``layout(features, image size)``; a leaf for ``torch.fx`` (the layout depends on the shape)."""
    return layout(features, [image.shape[-2], image.shape[-1]])


torch.fx.wrap("call_head")
torch.fx.wrap("apply_layout")


def token_stride(backbone: nn.Module) -> Tuple[int, int]:
    """The patch stride behind a token backbone's grid (``(0, 0)`` if unknown)."""
    patch_embed = getattr(backbone, "patch_embed", None) or getattr(backbone, "stem", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is not None:
        patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
        return int(patch[0]), int(patch[1])
    info = getattr(backbone, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and isinstance(info[-1], dict) and info[-1].get("reduction"):
        return int(info[-1]["reduction"]), int(info[-1]["reduction"])
    return 0, 0


def _global_pool(global_pool: str) -> nn.Module:
    if global_pool not in GLOBAL_POOLS:
        raise ConfigError(f"global_pool={global_pool!r} is not supported; expected one of {GLOBAL_POOLS}")
    return SelectAdaptivePool2d(pool_type=global_pool, flatten=True) if global_pool else nn.Identity()


def _prefixed_matcher(matcher: Any, prefix: str) -> Any:
    """A timm ``group_matcher`` spec (regexes anchored at the parameter name) for ``prefix + name``."""
    if isinstance(matcher, dict):
        return {key: _prefixed_matcher(value, prefix) for key, value in matcher.items()}
    if isinstance(matcher, (list, tuple)) and matcher and isinstance(matcher[0], (list, tuple)):
        return [(_prefixed_matcher(pattern, prefix), suffix) for pattern, suffix in matcher]
    if isinstance(matcher, str):
        # every alternative starts at the name (timm matches with re.match); drop their '^'
        body = re.sub(r"(^|\|)\^", r"\1", matcher)
        return "^" + re.escape(prefix) + "(?:" + body + ")"
    return matcher


class NOAHModel(nn.Module):
    """A backbone plus a NOAH (``head="noah"``) or GAP + linear (``head="gap"``) head.

    Behaves like a timm model: ``forward_features`` gives the ``(B, C, h, w)`` map of the
    backbone, ``forward_head`` turns it into ``(B, num_classes)`` logits (``pre_logits=True``:
    the pooled ``(B, head_hidden_size)`` features), ``reset_classifier(num_classes,
    global_pool)`` swaps the head (0 classes: ``forward`` returns pooled features, or the map with
    ``global_pool=''``), ``forward_intermediates`` / ``feature_info`` expose the backbone's
    pyramid, and ``pretrained_cfg`` feeds ``timm.data.resolve_data_config``.

    Args:
        backbone: a module with ``forward_features``; timm models built with ``num_classes=0,
            global_pool=''``, whose ``forward_head(pre_logits=True)`` then only applies the
            per-position layers of the original head (see ``use_backbone_head``).
        num_features: channels of the per-position features.
        num_classes: number of classes (0: no head, see above).
        head: ``"noah"``, ``"gap"`` or another of :data:`HEAD_TYPES` (:func:`noah.head.build_head`).
        num_heads, key_ratio: the NOAH head's ``N`` and ``r`` (ignored for ``"gap"``).
        head_options: the head type's own options (NOAH's ablation switches and ``variant``, ...;
            :func:`noah.head.head_options`); ``None`` values mean the head's default.
        head_dropout: dropout on the value maps (NOAH) or before the linear layer (GAP).
        use_backbone_head: call ``backbone.forward_head(x, pre_logits=True)`` after
            ``forward_features`` -- this applies layers such as MobileNetV3's 1x1 conv head or
            ConvNeXt's norm per position, since they sit between the features and the classifier.
        num_prefix_tokens: leading class / distillation / register tokens to drop from token
            outputs; defaults to the backbone's own ``num_prefix_tokens``.
        pretrained_cfg: timm-style data config (input size, mean, std, crop, ...).
        global_pool: how ``forward_head(pre_logits=True)`` (and the GAP head) pools: ``"avg"``,
            ``"max"``, ``"avgmax"``, or ``""`` (no pooling).
        pre_logits_size: width of a per-position ``Linear + Tanh`` layer between the features
            and the head (the official DeiT models narrower than 192 have one, of width 192);
            ``None`` for none.
        embed_dim: width of a per-position linear embedding (:class:`PositionEmbedding`) between
            the features and the head, whose pooled output :meth:`forward_embedding` returns (the
            re-ID models' 512-d feature); ``None`` for none.
    """

    use_backbone_head: torch.jit.Final[bool]
    __jit_unused_properties__ = ["default_cfg", "feature_info"]

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int = 1000,
        head: str = "noah",
        num_heads: int = 4,
        key_ratio: float = 0.5,
        head_dropout: float = 0.0,
        use_backbone_head: bool = False,
        num_prefix_tokens: int | None = None,
        pretrained_cfg: dict[str, Any] | None = None,
        global_pool: str = "avg",
        pre_logits_size: int | None = None,
        embed_dim: int | None = None,
        head_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head not in HEAD_TYPES:
            raise ConfigError(f"unknown head {head!r}; expected one of {', '.join(HEAD_TYPES)}")
        if pre_logits_size is not None and (not isinstance(pre_logits_size, int) or pre_logits_size <= 0):
            raise ConfigError(f"pre_logits_size must be a positive integer or None, got {pre_logits_size!r}")
        if embed_dim is not None and (not isinstance(embed_dim, int) or isinstance(embed_dim, bool) or embed_dim <= 0):
            raise ConfigError(f"embed_dim must be a positive integer or None, got {embed_dim!r}")
        self.head_options = {k: v for k, v in (head_options or {}).items() if v is not None}
        self.backbone = backbone
        self.num_features = num_features
        self.head_hidden_size = embed_dim or pre_logits_size or num_features
        self.pre_logits_size = pre_logits_size
        self.embed_dim = embed_dim
        self.head_type = head
        self.num_heads = num_heads
        self.key_ratio = key_ratio
        self.head_dropout = head_dropout
        self.use_backbone_head = use_backbone_head
        self.num_prefix_tokens = (
            num_prefix_tokens if num_prefix_tokens is not None else int(getattr(backbone, "num_prefix_tokens", 0) or 0)
        )
        channels_last = str(getattr(backbone, "output_fmt", "NCHW")) == "NHWC"
        self.layout = FeatureMapLayout(num_features, self.num_prefix_tokens, channels_last, token_stride(backbone))
        self.pre_logits = TokenPreLogits(num_features, pre_logits_size) if pre_logits_size else nn.Identity()
        self.embed = PositionEmbedding(pre_logits_size or num_features, embed_dim) if embed_dim else nn.Identity()
        self.global_pool = global_pool
        self.pool = _global_pool(global_pool)
        self.pretrained_cfg = dict(pretrained_cfg or {})
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)
        self.register_load_state_dict_pre_hook(_official_layout_hook)

    # timm reads and writes the config under both names
    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """The backbone's feature pyramid (``num_chs``, ``reduction``, ``module`` under ``backbone.``)."""
        info = getattr(self.backbone, "feature_info", None) or []
        if not isinstance(info, (list, tuple)):  # a timm FeatureInfo
            info = info.get_dicts()
        return [dict(entry, module=f"backbone.{entry['module']}") if entry.get("module") else dict(entry) for entry in info]

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        head = build_head(self.head_type, self.head_hidden_size, num_classes, num_heads=self.num_heads,
                          key_ratio=self.key_ratio, dropout=self.head_dropout, **self.head_options)
        if isinstance(head, ClassifierHead) and self.global_pool not in ("", "avg"):
            head.reset(num_classes, pool_type=self.global_pool)  # timm's global_pool pools the GAP head too
        return head

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes (0: none).

        ``global_pool`` (``"avg"``, ``"max"``, ``"avgmax"`` or ``""``), when given, sets how the
        pre-logits features are pooled; ``""`` makes a 0-class model return the feature map.
        The NOAH head does its own spatial aggregation whatever this is.
        """
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        if global_pool is not None:
            self.pool = _global_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc if isinstance(self.head, ClassifierHead) else self.head

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.backbone, "no_weight_decay", None)
        return {f"backbone.{name}" for name in inner()} if callable(inner) else set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """The backbone's parameter groups (timm's layer-wise LR decay); the head and the
        pre-logits layer match none, which puts them in the last group."""
        inner = getattr(self.backbone, "group_matcher", None)
        if not callable(inner):
            return dict(backbone=r"^backbone\.")
        return _prefixed_matcher(inner(coarse=coarse), "backbone.")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        inner = getattr(self.backbone, "set_grad_checkpointing", None)
        if not callable(inner):
            raise ConfigError(f"{type(self.backbone).__name__} does not support gradient checkpointing")
        inner(enable)

    def _feature_map(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.use_backbone_head:
            features = self.backbone.forward_head(features, pre_logits=True)
        if torch.jit.is_scripting():
            return self.layout(features, [image.shape[-2], image.shape[-1]])
        return self._feature_map_eager(features, image)

    @torch.jit.unused
    def _feature_map_eager(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return apply_layout(self.layout, features, image)

    def to_feature_map(self, features: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Bring backbone output to ``(B, C, H, W)``: NCHW as is, NHWC permuted, tokens
        ``(B, T, C)`` stripped of prefix tokens and laid out on the patch grid."""
        return self.layout(features, list(image_size))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` to the backbone's feature map ``(B, num_features, h, w)``."""
        return self._feature_map(self.backbone.forward_features(x), x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map ``(B, num_features, h, w)`` to logits ``(B, num_classes)``.

        ``pre_logits=True`` (or a 0-class model) returns the pooled ``(B, head_hidden_size)``
        features the classifier would see -- for NOAH the spatial mean of its input map (the head
        itself consumes the whole map) -- or that map with ``global_pool=''``.
        """
        x = self.embed(self.pre_logits(x))
        if pre_logits or self.num_classes == 0:
            return self.pool(x)
        if torch.jit.is_scripting():
            return self.head(x)
        return self._classify(x)

    @torch.jit.unused
    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.head, NOAHHead):
            return call_head(self.head, x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_with_maps(self, x: torch.Tensor) -> NOAHOutput:
        """Logits plus the per-block attention and value maps ``(B, N, M, h, w)`` in one pass."""
        if not isinstance(self.head, NOAHHead):
            raise ConfigError("forward_with_maps needs a model built with head='noah' and num_classes > 0")
        return self.head(self.embed(self.pre_logits(self.forward_features(x))), return_maps=True)

    @torch.jit.ignore
    def forward_embedding(self, x: torch.Tensor, pool: str = "attention") -> torch.Tensor:
        """Images ``(B, 3, H, W)`` to one ``(B, head_hidden_size)`` descriptor per image, for
        retrieval (re-ID): the map the head reads, pooled over positions.

        ``pool="average"`` is global average pooling -- with ``embed_dim`` set, exactly the
        "FC after GAP" embedding of the re-ID literature. ``pool="attention"`` (NOAH heads only;
        GAP heads always average) weights each position by the head's attention there, averaged
        over the POCA blocks and the training classes: the same features, pooled where the
        head looks instead of uniformly.
        """
        if pool not in EMBEDDING_POOLS:
            raise ConfigError(f"unknown embedding pool {pool!r}; expected one of {', '.join(EMBEDDING_POOLS)}")
        features = self.embed(self.pre_logits(self.forward_features(x)))
        if pool == "average" or not isinstance(self.head, NOAHHead):
            return features.mean(dim=(2, 3))
        weights = self.head(features, return_maps=True).attention.mean(dim=(1, 2))  # (B, h, w), sums to 1
        return torch.einsum("bchw,bhw->bc", features, weights)

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        **kwargs: Any,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The backbone's ``forward_intermediates``: the pyramid levels picked by ``indices``
        (``feature_info`` order), and unless ``intermediates_only`` the ``forward_features`` map."""
        inner = getattr(self.backbone, "forward_intermediates", None)
        if not callable(inner):
            raise ConfigError(f"{type(self.backbone).__name__} has no forward_intermediates")
        out = inner(
            x, indices=indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt,
            intermediates_only=intermediates_only, **kwargs,
        )
        if intermediates_only:
            return out
        final, intermediates = out
        return self._feature_map(final, x), intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Prune the backbone to what ``forward_intermediates(indices)`` needs; with
        ``prune_head`` drop the head too. Returns the absolute indices taken."""
        inner = getattr(self.backbone, "prune_intermediate_layers", None)
        if callable(inner):
            take = inner(indices, prune_norm=prune_norm, prune_head=True)
        else:
            take = feature_take_indices(len(self.feature_info), indices)[0]
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def __prepare_scriptable__(self) -> "NOAHModel":
        """What ``torch.jit.script`` compiles: this model with the NOAH head replaced by its
        plain-formula twin (same parameters, same numbers; the fast paths do not script)."""
        if not isinstance(self.head, NOAHHead):
            return self
        if not self.head.is_standard:
            raise ConfigError("TorchScript covers the standard NOAH head only; this head has ablation switches "
                              f"{self.head_options} (export it to ONNX instead)")
        twin = copy.copy(self)
        twin._modules = dict(self._modules)
        twin._modules["head"] = ScriptablePOCA(self.head)
        return twin


def _official_layout_hook(
    module: nn.Module, state_dict: Dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
    missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str],
) -> None:
    """Rename the keys of an official NOAH checkpoint (or a bare backbone's) to this model's, in
    place, whenever ``load_state_dict`` meets keys that are not the model's own."""
    own = {k for k in module.state_dict()}
    mine = {k[len(prefix):]: k for k in state_dict if k.startswith(prefix)}
    if all(k in own for k in mine):
        return
    renamed, _ = translate_official_keys({k: state_dict[full] for k, full in mine.items()}, module)
    for full in mine.values():
        del state_dict[full]
    state_dict.update({prefix + k: v for k, v in renamed.items()})
