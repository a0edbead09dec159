"""The paper's 26 ImageNet architectures: backbones, NOAH presets, reported numbers.

The 25 of SPEC §4 (the paper's tables) plus MobileNetV3-Small from the project page. Each row
also records how the released checkpoint of that model was evaluated (its data config), which
becomes the model's ``pretrained_cfg``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.models import build_model_with_cfg
from timm.models.mlp_mixer import GatedMlp, MlpMixer, SpatialGatingBlock
from torch import nn

from noah.models.mobilenetv3 import MobileNetV3Small
from noah.models.pvt import PyramidVisionTransformer, pvt_tiny_args
from noah.models.shufflenet import shufflenet_v2_x1_0_backbone

__all__ = ["PaperModel", "PAPER_MODELS", "BackboneSpec", "OFFICIAL_CODE", "get_paper_model"]


@dataclass(frozen=True)
class BackboneSpec:
    """A headless backbone: the module, its per-position feature width, how to read it."""

    module: nn.Module
    num_features: int
    use_backbone_head: bool = False


def _timm(name: str, **fixed: Any) -> Callable[..., BackboneSpec]:
    def build(**kwargs: Any) -> BackboneSpec:
        model = timm.create_model(name, num_classes=0, global_pool="", **{**fixed, **kwargs})
        return BackboneSpec(model, model.head_hidden_size, use_backbone_head=True)

    return build


def _deit(name: str, **args: Any) -> Callable[..., BackboneSpec]:
    # The paper's ViTs have no class token: position embeddings cover the patches only.
    return _timm(name, class_token=False, **args)


def _mixer(variant: str, **args: Any) -> Callable[..., BackboneSpec]:
    def build(**kwargs: Any) -> BackboneSpec:
        model = build_model_with_cfg(MlpMixer, variant, False, num_classes=0, global_pool="", **{**args, **kwargs})
        return BackboneSpec(model, model.num_features, use_backbone_head=True)

    return build


def _gmlp(variant: str, embed_dim: int) -> Callable[..., BackboneSpec]:
    return _mixer(
        variant, patch_size=16, num_blocks=30, embed_dim=embed_dim, mlp_ratio=6,
        block_layer=SpatialGatingBlock, mlp_layer=GatedMlp,
    )


def _pvt(width: float) -> Callable[..., BackboneSpec]:
    def build(**kwargs: Any) -> BackboneSpec:
        model = PyramidVisionTransformer(num_classes=0, **{**pvt_tiny_args(width), **kwargs})
        return BackboneSpec(model, model.num_features)

    return build


def _shufflenet(**kwargs: Any) -> BackboneSpec:
    model = shufflenet_v2_x1_0_backbone(**kwargs)
    return BackboneSpec(model, model.num_features)


def _mobilenetv3_small(**kwargs: Any) -> BackboneSpec:
    model = MobileNetV3Small(**kwargs)
    return BackboneSpec(model, model.num_features)


# How the official code evaluated each family (resize, centre crop, normalisation): the CNN code
# resizes to 256 and crops 224 (torchvision, bilinear); the DeiT and PVT code does the same with
# bicubic resizing; Mixer / gMLP were trained with timm's script, crop 0.9, mean = std = 0.5.
_CNN_DATA = dict(crop_pct=0.875, interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
_VIT_DATA = dict(crop_pct=0.875, interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
_MLP_DATA = dict(crop_pct=0.9, interpolation="bicubic", mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD)


@dataclass(frozen=True)
class OfficialCode:
    """One family of the official repository: its model file, stem name here, output stride, data config."""

    source: str
    first_conv: str
    reduction: int
    data: dict[str, Any] = field(repr=False)


#: the official repository's model definition behind each family, and facts about our backbone for it
OFFICIAL_CODE = {
    "resnet": OfficialCode("models/noah_resnet.py", "conv1", 32, _CNN_DATA),
    "mobilenetv2": OfficialCode("models/noah_mobilenetv2.py", "conv_stem", 32, _CNN_DATA),
    "mobilenetv3": OfficialCode("models/noah_mobilenetv3.py", "features.0.0", 32, _CNN_DATA),
    "shufflenetv2": OfficialCode("models/noah_shufflenetv2.py", "conv1.0", 32, _CNN_DATA),
    "deit": OfficialCode("vit/deit/noah_vision_transformer.py", "patch_embed.proj", 16, _VIT_DATA),
    "pvt": OfficialCode("vit/pvt/classification/noah_pvt.py", "stages.0.patch_embed.proj", 32, _VIT_DATA),
    "mixer": OfficialCode("mlp/timm/models/noah_mlp_mixer.py", "stem.proj", 16, _MLP_DATA),
}


@dataclass(frozen=True)
class PaperModel:
    """One row of SPEC §4 (or the project page): the paper's NOAH preset and the numbers it reports.

    ``params`` and ``top1`` are ``(baseline, NOAH)`` pairs, in millions and percent; ``code``
    names the official model code of the family (a key of :data:`OFFICIAL_CODE`).
    """

    name: str
    title: str
    family: str
    num_heads: int
    key_ratio: float
    head_dropout: float
    params: tuple[float, float]
    top1: tuple[float, float]
    code: str
    build_backbone: Callable[..., BackboneSpec] = field(repr=False, compare=False)
    #: why a printed parameter count cannot be reproduced (empty when both match to 0.01 M)
    param_note: str = ""

    def preset(self) -> dict[str, Any]:
        return {"num_heads": self.num_heads, "key_ratio": self.key_ratio, "head_dropout": self.head_dropout}

    def pretrained_cfg(self, head: str = "noah", num_classes: int = 1000, img_size: int = 224) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` of this model with ``head`` (``first_conv``/``classifier``
        name parameters of the :class:`NOAHModel`), data settings of the official checkpoints."""
        code = OFFICIAL_CODE[self.code]
        side = -(-img_size // code.reduction)
        return dict(
            architecture=f"noah_{self.name}", num_classes=num_classes, input_size=(3, img_size, img_size),
            pool_size=(side, side), first_conv=f"backbone.{code.first_conv}",
            classifier=("head.query", "head.value") if head == "noah" else "head.fc",
            license="apache-2.0", **code.data,
        )


_PARAM_NOTES = {
    "deit_small_patch16_224": (
        "baseline: DeiT-Small has 22.05 M parameters (22.0507 M with its class token as in timm, 22.0499 M "
        "with the GAP head and no class token); the paper prints 22.06 M, the NOAH model's count"
    ),
    "deit_base_patch16_224": "timm's DeiT-Base has 86.57 M parameters (86.57 M with NOAH too); the paper prints 86.86 M",
    "gmlp_ti16_075_224": (
        "embed 96 (= 128 x 0.75) with the x1.0/x0.5 rows' scaling gives 3.86 / 3.87 M; the paper prints 3.91 M, "
        "which no embed width with gMLP's MLP ratio 6 reproduces"
    ),
}

_ROWS = [
    # name, title, family, N, r, dropout, params, top1, official code, builder
    ("resnet18", "ResNet18", "CNN", 4, 1 / 2, 0.1, (11.69, 11.70), (70.25, 71.81), "resnet", _timm("resnet18")),
    ("resnet50", "ResNet50", "CNN", 4, 1 / 8, 0.1, (25.56, 25.56), (76.23, 77.25), "resnet", _timm("resnet50")),
    ("resnet101", "ResNet101", "CNN", 4, 1 / 8, 0.1, (44.55, 44.56), (77.41, 78.22), "resnet", _timm("resnet101")),
    ("resnet152", "ResNet152", "CNN", 4, 1 / 8, 0.1, (60.19, 60.20), (78.16, 78.57), "resnet", _timm("resnet152")),
    ("mobilenetv2_100", "MobileNetV2 x1.0", "CNN", 8, 1 / 4, 0.2, (3.50, 3.52), (72.02, 73.35), "mobilenetv2", _timm("mobilenetv2_100")),
    ("mobilenetv2_075", "MobileNetV2 x0.75", "CNN", 8, 1 / 4, 0.2, (2.64, 2.65), (69.65, 71.44), "mobilenetv2", _timm("mobilenetv2_075")),
    ("mobilenetv2_050", "MobileNetV2 x0.5", "CNN", 8, 1 / 4, 0.2, (1.97, 1.98), (64.30, 67.44), "mobilenetv2", _timm("mobilenetv2_050")),
    ("mobilenetv2_035", "MobileNetV2 x0.35", "CNN", 8, 1 / 4, 0.2, (1.68, 1.69), (59.62, 63.40), "mobilenetv2", _timm("mobilenetv2_035")),
    ("mobilenetv3_small", "MobileNetV3-Small", "CNN", 8, 1 / 4, 0.2, (2.94, 2.95), (67.11, 68.92), "mobilenetv3", _mobilenetv3_small),
    ("shufflenetv2_100", "ShuffleNetV2 x1.0", "CNN", 8, 1 / 4, 0.0, (2.28, 2.29), (69.43, 70.72), "shufflenetv2", _shufflenet),
    ("deit_tiny_patch16_224", "DeiT-Tiny x1.0", "ViT", 4, 1 / 2, 0.1, (5.72, 5.72), (72.16, 74.29), "deit", _deit("deit_tiny_patch16_224")),
    ("deit_tiny_075_patch16_224", "DeiT-Tiny x0.75", "ViT", 4, 1 / 2, 0.1, (3.29, 3.30), (62.55, 66.64), "deit", _deit("deit_tiny_patch16_224", embed_dim=144)),
    ("deit_tiny_050_patch16_224", "DeiT-Tiny x0.5", "ViT", 4, 1 / 2, 0.1, (1.53, 1.54), (51.36, 56.66), "deit", _deit("deit_tiny_patch16_224", embed_dim=96)),
    ("deit_small_patch16_224", "DeiT-Small", "ViT", 4, 1 / 2, 0.1, (22.06, 22.06), (79.78, 80.56), "deit", _deit("deit_small_patch16_224")),
    ("deit_base_patch16_224", "DeiT-Base", "ViT", 4, 1 / 2, 0.1, (86.86, 86.86), (81.85, 82.22), "deit", _deit("deit_base_patch16_224")),
    ("pvt_tiny", "PVT-Tiny x1.0", "ViT", 4, 1 / 2, 0.1, (13.23, 13.24), (75.10, 76.51), "pvt", _pvt(1.0)),
    ("pvt_tiny_075", "PVT-Tiny x0.75", "ViT", 4, 1 / 2, 0.1, (7.62, 7.62), (71.81, 74.22), "pvt", _pvt(0.75)),
    ("pvt_tiny_050", "PVT-Tiny x0.5", "ViT", 4, 1 / 2, 0.1, (3.54, 3.55), (65.33, 68.50), "pvt", _pvt(0.5)),
    ("mixer_s16_224", "Mixer-Small x1.0", "MLP", 4, 1 / 2, 0.1, (18.53, 18.54), (74.18, 75.09), "mixer",
     _mixer("mixer_s16_224", patch_size=16, num_blocks=8, embed_dim=512)),
    ("mixer_s16_075_224", "Mixer-Small x0.75", "MLP", 4, 1 / 2, 0.1, (10.75, 10.76), (71.13, 72.32), "mixer",
     _mixer("mixer_s16_224", patch_size=16, num_blocks=8, embed_dim=384)),
    ("mixer_s16_050_224", "Mixer-Small x0.5", "MLP", 4, 1 / 2, 0.1, (5.07, 5.08), (65.22, 66.81), "mixer",
     _mixer("mixer_s16_224", patch_size=16, num_blocks=8, embed_dim=256)),
    ("mixer_b16_224", "Mixer-Base", "MLP", 4, 1 / 2, 0.1, (59.88, 59.88), (77.14, 77.49), "mixer",
     _mixer("mixer_b16_224", patch_size=16, num_blocks=12, embed_dim=768)),
    ("gmlp_ti16_224", "gMLP-Tiny x1.0", "MLP", 4, 1 / 2, 0.1, (5.87, 5.87), (72.05, 73.39), "mixer", _gmlp("gmlp_ti16_224", 128)),
    ("gmlp_ti16_075_224", "gMLP-Tiny x0.75", "MLP", 4, 1 / 2, 0.1, (3.91, 3.91), (65.95, 67.71), "mixer", _gmlp("gmlp_ti16_224", 96)),
    ("gmlp_ti16_050_224", "gMLP-Tiny x0.5", "MLP", 4, 1 / 2, 0.1, (2.41, 2.41), (54.99, 56.89), "mixer", _gmlp("gmlp_ti16_224", 64)),
    ("gmlp_s16_224", "gMLP-Small", "MLP", 4, 1 / 2, 0.1, (19.42, 19.42), (79.65, 79.95), "mixer", _gmlp("gmlp_s16_224", 256)),
]

PAPER_MODELS: dict[str, PaperModel] = {
    row[0]: PaperModel(*row, param_note=_PARAM_NOTES.get(row[0], "")) for row in _ROWS
}


def get_paper_model(name: str) -> PaperModel | None:
    """The paper row for ``name`` (with or without the ``noah_`` prefix), else ``None``."""
    return PAPER_MODELS.get(name.removeprefix("noah_"))
