"""Official checkpoints of every family load with the official model's logits.

For each family of the official repository (OSVAI/NOAH: models/noah_resnet.py,
noah_mobilenetv2.py, noah_mobilenetv3.py, noah_shufflenetv2.py, vit/deit/noah_vision_transformer.py,
vit/pvt/classification/noah_pvt.py, mlp/timm/models/noah_mlp_mixer.py), a reference below restates
the official forward pass in plain ``torch.nn.functional`` calls, reading every tensor by the key
the official code gives it. Run once, the reference draws each tensor (random, with the official
shape) on first use, so it also writes the checkpoint in the official layout; the test saves that
checkpoint as the official training scripts do and compares the loaded model's logits with the
reference's.
"""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

import noah

CLASSES = 10


class OfficialTensors:
    """The tensors of an official checkpoint, drawn on first use by key with the official shape."""

    def __init__(self, seed: int = 0) -> None:
        self.sd: dict[str, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, shape: tuple[int, ...], kind: str) -> torch.Tensor:
        g = self.generator
        if kind == "weight":
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            return torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        if kind == "scale":  # norm weights, BN running variance
            return 0.5 + torch.rand(shape, generator=g)
        return 0.1 * torch.randn(shape, generator=g)  # biases, BN means, position embeddings

    def __call__(self, key: str, *shape: int, kind: str = "weight") -> torch.Tensor:
        if key not in self.sd:
            self.sd[key] = self._draw(tuple(shape), kind)
        assert tuple(self.sd[key].shape) == tuple(shape), key
        return self.sd[key]

    # -- layers, by official key prefix -------------------------------------------------------

    def conv(self, key: str, x: torch.Tensor, out: int, k: int, stride: int = 1, pad: int = 0, groups: int = 1,
             bias: bool = False) -> torch.Tensor:
        w = self(f"{key}.weight", out, x.shape[1] // groups, k, k)
        b = self(f"{key}.bias", out, kind="bias") if bias else None
        return F.conv2d(x, w, b, stride, pad, groups=groups)

    def bn(self, key: str, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if f"{key}.num_batches_tracked" not in self.sd:
            self.sd[f"{key}.num_batches_tracked"] = torch.tensor(100)
        return F.batch_norm(
            x, self(f"{key}.running_mean", c, kind="bias"), self(f"{key}.running_var", c, kind="scale"),
            self(f"{key}.weight", c, kind="scale"), self(f"{key}.bias", c, kind="bias"), False, 0.0, 1e-5,
        )

    def linear(self, key: str, x: torch.Tensor, out: int, bias: bool = True) -> torch.Tensor:
        b = self(f"{key}.bias", out, kind="bias") if bias else None
        return F.linear(x, self(f"{key}.weight", out, x.shape[-1]), b)

    def ln(self, key: str, x: torch.Tensor, eps: float) -> torch.Tensor:
        c = x.shape[-1]
        return F.layer_norm(x, (c,), self(f"{key}.weight", c, kind="scale"), self(f"{key}.bias", c, kind="bias"), eps)

    def noah(self, key: str, x: torch.Tensor, heads: int, key_ratio: float) -> torch.Tensor:
        """The official NOAH head on ``(B, C, ...)`` features: grouped 1x1 convs on ``(B, C, 1, L)``."""
        x = x.flatten(2).unsqueeze(2)
        b, c, length = x.shape[0], x.shape[1], x.shape[3]
        kc = int(c * key_ratio)
        attention = self.conv(f"{key}.query", x[:, :kc], heads * CLASSES, 1, groups=heads, bias=True)
        value = self.conv(f"{key}.value", x[:, kc:], heads * CLASSES, 1, groups=heads, bias=True)
        attention = attention.reshape(b, heads, CLASSES, length).softmax(dim=3)
        return (attention * value.reshape(b, heads, CLASSES, length)).sum(dim=(1, 3))


def hswish(x: torch.Tensor) -> torch.Tensor:
    return x * F.relu6(x + 3.0) / 6.0


# -- CNNs (models/noah_*.py) --------------------------------------------------------------------

def noah_head(heads: int, key_ratio: float):
    return lambda p, x: p.noah("head", x, heads, key_ratio)


def gap_head(p: OfficialTensors, x: torch.Tensor) -> torch.Tensor:
    """The official baselines' head: (pool, flatten, Linear) as head.0-2."""
    return p.linear("head.2", x.mean(dim=(2, 3)), CLASSES)


def resnet(p: OfficialTensors, x: torch.Tensor, bottleneck: bool, depths: list[int], classify) -> torch.Tensor:
    x = F.max_pool2d(F.relu(p.bn("bn1", p.conv("conv1", x, 64, 7, 2, 3))), 3, 2, 1)
    expansion = 4 if bottleneck else 1
    for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        for j in range(depth):
            pre, stride = f"layer{i}.{j}", (2 if i > 1 and j == 0 else 1)
            if bottleneck:
                out = F.relu(p.bn(f"{pre}.bn1", p.conv(f"{pre}.conv1", x, planes, 1)))
                out = F.relu(p.bn(f"{pre}.bn2", p.conv(f"{pre}.conv2", out, planes, 3, stride, 1)))
                out = p.bn(f"{pre}.bn3", p.conv(f"{pre}.conv3", out, planes * 4, 1))
            else:
                out = F.relu(p.bn(f"{pre}.bn1", p.conv(f"{pre}.conv1", x, planes, 3, stride, 1)))
                out = p.bn(f"{pre}.bn2", p.conv(f"{pre}.conv2", out, planes, 3, 1, 1))
            if j == 0 and (stride != 1 or x.shape[1] != planes * expansion):
                x = p.bn(f"{pre}.downsample.1", p.conv(f"{pre}.downsample.0", x, planes * expansion, 1, stride))
            x = F.relu(out + x)
    return classify(p, x)


def divisible(value: float, divisor: int = 8) -> int:
    """The official MobileNetV2 channel rounding (to a multiple of 8, never 10% below)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenetv2(p: OfficialTensors, x: torch.Tensor, width: float) -> torch.Tensor:
    channels = divisible(32 * width)
    x = F.relu6(p.bn("features.0.1", p.conv("features.0.0", x, channels, 3, 2, 1)))
    index = 1
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        out_channels = divisible(c * width)
        for i in range(n):
            pre, stride, hidden = f"features.{index}.conv", (s if i == 0 else 1), int(round(channels * t))
            y, k = x, 0
            if t != 1:
                y = F.relu6(p.bn(f"{pre}.0.1", p.conv(f"{pre}.0.0", y, hidden, 1)))
                k = 1
            y = F.relu6(p.bn(f"{pre}.{k}.1", p.conv(f"{pre}.{k}.0", y, hidden, 3, stride, 1, groups=hidden)))
            y = p.bn(f"{pre}.{k + 2}", p.conv(f"{pre}.{k + 1}", y, out_channels, 1))
            x = x + y if stride == 1 and channels == out_channels else y
            channels, index = out_channels, index + 1
    x = F.relu6(p.bn(f"features.{index}.1", p.conv(f"features.{index}.0", x, 1280, 1)))
    return p.noah("head", x, 8, 0.25)


def mobilenetv3_small(p: OfficialTensors, x: torch.Tensor) -> torch.Tensor:
    x = hswish(p.bn("features.0.1", p.conv("features.0.0", x, 16, 3, 2, 1)))
    blocks = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
              (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
              (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
              (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]
    for i, (k, expand, out, se, nl, stride) in enumerate(blocks, start=1):
        act = F.relu if nl == "RE" else hswish
        pre = f"features.{i}.conv"
        y = act(p.bn(f"{pre}.1", p.conv(f"{pre}.0", x, expand, 1)))
        y = p.bn(f"{pre}.4", p.conv(f"{pre}.3", y, expand, k, stride, (k - 1) // 2, groups=expand))
        if se:
            gate = F.relu(p.linear(f"{pre}.5.fc.0", y.mean(dim=(2, 3)), expand // 4, bias=False))
            y = y * (F.relu6(p.linear(f"{pre}.5.fc.2", gate, expand, bias=False) + 3.0) / 6.0)[:, :, None, None]
        y = p.bn(f"{pre}.8", p.conv(f"{pre}.7", act(y), out, 1))
        x = x + y if stride == 1 and x.shape[1] == out else y
    x = hswish(p.bn("features.12.1", p.conv("features.12.0", x, 576, 1)))
    x = hswish(p.conv("features.13", x, 1280, 1, bias=True))
    return p.noah("classifier", x, 8, 0.25)


def shufflenetv2(p: OfficialTensors, x: torch.Tensor) -> torch.Tensor:
    x = F.max_pool2d(F.relu(p.bn("conv1.1", p.conv("conv1.0", x, 24, 3, 2, 1))), 3, 2, 1)
    for stage, repeats, out in ((2, 4, 116), (3, 8, 232), (4, 4, 464)):
        half = out // 2
        for i in range(repeats):
            pre = f"stage{stage}.{i}"
            if i == 0:  # stride 2: both branches see the whole input
                left = p.bn(f"{pre}.branch1.1", p.conv(f"{pre}.branch1.0", x, x.shape[1], 3, 2, 1, groups=x.shape[1]))
                left = F.relu(p.bn(f"{pre}.branch1.3", p.conv(f"{pre}.branch1.2", left, half, 1)))
                right, stride = x, 2
            else:
                left, right = x.chunk(2, dim=1)
                stride = 1
            right = F.relu(p.bn(f"{pre}.branch2.1", p.conv(f"{pre}.branch2.0", right, half, 1)))
            right = p.bn(f"{pre}.branch2.4", p.conv(f"{pre}.branch2.3", right, half, 3, stride, 1, groups=half))
            right = F.relu(p.bn(f"{pre}.branch2.6", p.conv(f"{pre}.branch2.5", right, half, 1)))
            x = torch.cat([left, right], dim=1)
            b, c, h, w = x.shape
            x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)  # channel shuffle, 2 groups
    x = F.relu(p.bn("conv5.1", p.conv("conv5.0", x, 1024, 1)))
    return p.noah("head", x, 8, 0.25)


# -- transformers and MLPs (vit/, mlp/) ----------------------------------------------------------

def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, h, N, d) queries against (B, h, M, d) keys/values, softmax(q k^T / sqrt d) v."""
    return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1) @ v


def deit(p: OfficialTensors, x: torch.Tensor, dim: int, heads: int = 3, depth: int = 12) -> torch.Tensor:
    x = p.conv("patch_embed.proj", x, dim, 16, 16, bias=True).flatten(2).transpose(1, 2)
    x = x + p("pos_embed", 1, x.shape[1], dim, kind="bias")  # no class token in the NOAH variant
    b, n, _ = x.shape
    for i in range(depth):
        pre = f"blocks.{i}"
        qkv = p.linear(f"{pre}.attn.qkv", p.ln(f"{pre}.norm1", x, 1e-6), 3 * dim)
        q, k, v = qkv.reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        x = x + p.linear(f"{pre}.attn.proj", attention(q, k, v).transpose(1, 2).reshape(b, n, dim), dim)
        hidden = F.gelu(p.linear(f"{pre}.mlp.fc1", p.ln(f"{pre}.norm2", x, 1e-6), 4 * dim))
        x = x + p.linear(f"{pre}.mlp.fc2", hidden, dim)
    x = p.ln("norm", x, 1e-6)
    if dim < 192:  # the official per-token pre-logits layer of the narrow models
        x = torch.tanh(p.linear("pre_logits.fc", x, 192))
    return p.noah("head", x.permute(0, 2, 1).unsqueeze(3), 4, 0.5)


def pvt(p: OfficialTensors, x: torch.Tensor, dims: tuple[int, ...], side: int = 224) -> torch.Tensor:
    b = x.shape[0]
    for i, (dim, heads, ratio, sr) in enumerate(zip(dims, (1, 2, 5, 8), (8, 8, 4, 4), (8, 4, 2, 1)), start=1):
        patch = 4 if i == 1 else 2
        x = p.conv(f"patch_embed{i}.proj", x, dim, patch, patch, bias=True)
        h, w = x.shape[2:]
        x = p.ln(f"patch_embed{i}.norm", x.flatten(2).transpose(1, 2), 1e-5)
        grid = side // (4 * 2 ** (i - 1))  # the position grid of the training size
        pos = p(f"pos_embed{i}", 1, grid * grid, dim, kind="bias")
        if h * w != (side // 4) ** 2:  # the official code resizes whenever the size differs from stage 1's
            pos = F.interpolate(pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2), size=(h, w), mode="bilinear")
            pos = pos.reshape(1, -1, h * w).permute(0, 2, 1)
        x = x + pos
        for j in range(2):
            pre = f"block{i}.{j}"
            y = p.ln(f"{pre}.norm1", x, 1e-6)
            n = y.shape[1]
            q = p.linear(f"{pre}.attn.q", y, dim).reshape(b, n, heads, dim // heads).permute(0, 2, 1, 3)
            context = y
            if sr > 1:
                reduced = p.conv(f"{pre}.attn.sr", y.permute(0, 2, 1).reshape(b, dim, h, w), dim, sr, sr, bias=True)
                context = p.ln(f"{pre}.attn.norm", reduced.reshape(b, dim, -1).permute(0, 2, 1), 1e-5)
            k, v = p.linear(f"{pre}.attn.kv", context, 2 * dim).reshape(b, -1, 2, heads, dim // heads).permute(2, 0, 3, 1, 4)
            x = x + p.linear(f"{pre}.attn.proj", attention(q, k, v).transpose(1, 2).reshape(b, n, dim), dim)
            hidden = F.gelu(p.linear(f"{pre}.mlp.fc1", p.ln(f"{pre}.norm2", x, 1e-6), dim * ratio))
            x = x + p.linear(f"{pre}.mlp.fc2", hidden, dim)
        if i < 4:
            x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)
    x = p.ln("norm", x, 1e-6)
    return p.noah("head", x.permute(0, 2, 1), 4, 0.5)


def mixer(p: OfficialTensors, x: torch.Tensor, dim: int, depth: int = 8) -> torch.Tensor:
    x = p.conv("stem.proj", x, dim, 16, 16, bias=True).flatten(2).transpose(1, 2)
    tokens = x.shape[1]
    for i in range(depth):
        pre = f"blocks.{i}"
        y = p.ln(f"{pre}.norm1", x, 1e-6).transpose(1, 2)
        y = p.linear(f"{pre}.mlp_tokens.fc2", F.gelu(p.linear(f"{pre}.mlp_tokens.fc1", y, dim // 2)), tokens)
        x = x + y.transpose(1, 2)
        y = F.gelu(p.linear(f"{pre}.mlp_channels.fc1", p.ln(f"{pre}.norm2", x, 1e-6), 4 * dim))
        x = x + p.linear(f"{pre}.mlp_channels.fc2", y, dim)
    x = p.ln("norm", x, 1e-6)
    return p.noah("head", x.transpose(-1, -2).unsqueeze(3), 4, 0.5)


def gmlp(p: OfficialTensors, x: torch.Tensor, dim: int, depth: int = 30) -> torch.Tensor:
    x = p.conv("stem.proj", x, dim, 16, 16, bias=True).flatten(2).transpose(1, 2)
    tokens = x.shape[1]
    for i in range(depth):
        pre = f"blocks.{i}.mlp_channels"
        y = F.gelu(p.linear(f"{pre}.fc1", p.ln(f"blocks.{i}.norm", x, 1e-6), 6 * dim))
        u, v = y.chunk(2, dim=-1)
        v = p.linear(f"{pre}.gate.proj", p.ln(f"{pre}.gate.norm", v, 1e-5).transpose(-1, -2), tokens)
        x = x + p.linear(f"{pre}.fc2", u * v.transpose(-1, -2), dim)
    x = p.ln("norm", x, 1e-6)
    return p.noah("head", x.transpose(-1, -2).unsqueeze(3), 4, 0.5)


# -- the official training scripts' checkpoint files ---------------------------------------------

def cnn_checkpoint(sd):
    """models/ main.py: DDP-wrapped model, {'epoch', 'state_dict', 'acc', 'best_acc', 'optimizer'}."""
    return {"epoch": 100, "state_dict": {f"module.{k}": v for k, v in sd.items()}, "acc": 70.0, "best_acc": 71.0, "optimizer": {}}


def deit_checkpoint(sd):
    """DeiT / PVT main.py: the unwrapped model under 'model', the run's arguments as a Namespace."""
    return {"model": sd, "optimizer": {}, "lr_scheduler": {}, "epoch": 299, "args": argparse.Namespace(model="noah", lr=5e-4)}


def timm_checkpoint(sd):
    """timm's train.py (Mixer, gMLP): 'state_dict' and its EMA, the arguments as a Namespace."""
    return {"epoch": 299, "arch": "noah", "state_dict": sd, "optimizer": {}, "version": 2,
            "args": argparse.Namespace(model="noah", lr=7e-4), "metric": 70.0}


# name, reference, checkpoint writer, input side, what the report must say was mapped
FAMILIES = [
    ("resnet18", lambda p, x: resnet(p, x, False, [2, 2, 2, 2], noah_head(4, 0.5)), cnn_checkpoint, 64, "under 'backbone.'"),
    ("mobilenetv2_035", lambda p, x: mobilenetv2(p, x, 0.35), cnn_checkpoint, 64, "official MobileNetV2 layout"),
    ("mobilenetv3_small", mobilenetv3_small, cnn_checkpoint, 64, "head 'classifier' to 'head'"),
    ("shufflenetv2_100", shufflenetv2, cnn_checkpoint, 64, "under 'backbone.'"),
    ("deit_tiny_050_patch16_224", lambda p, x: deit(p, x, 96), deit_checkpoint, 224, "pre-logits layer (Linear 96 -> 192"),
    ("deit_tiny_patch16_224", lambda p, x: deit(p, x, 192), deit_checkpoint, 224, "under 'backbone.'"),
    ("pvt_tiny_050", lambda p, x: pvt(p, x, (32, 64, 160, 256)), deit_checkpoint, 224, "official PVT layout"),
    ("mixer_s16_050_224", lambda p, x: mixer(p, x, 256), timm_checkpoint, 224, "under 'backbone.'"),
    ("gmlp_ti16_050_224", lambda p, x: gmlp(p, x, 64), timm_checkpoint, 224, "under 'backbone.'"),
]
SLOW_FAMILIES = [
    ("resnet50", lambda p, x: resnet(p, x, True, [3, 4, 6, 3], noah_head(4, 0.125)), cnn_checkpoint, 64, "under 'backbone.'"),
    ("mobilenetv2_100", lambda p, x: mobilenetv2(p, x, 1.0), cnn_checkpoint, 64, "official MobileNetV2 layout"),
    ("deit_tiny_075_patch16_224", lambda p, x: deit(p, x, 144), deit_checkpoint, 224, "pre-logits layer (Linear 144 -> 192"),
    ("pvt_tiny", lambda p, x: pvt(p, x, (64, 128, 320, 512)), deit_checkpoint, 224, "official PVT layout"),
]


def official_checkpoint(tmp_path, reference, writer, side, seed=0):
    """Run the reference on two images; save the tensors it drew as the official script would."""
    tensors = OfficialTensors(seed)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        expected = reference(tensors, x)
    path = tmp_path / "official.pth"
    torch.save(writer(tensors.sd), path)
    return path, x, expected, tensors.sd


def check_family(tmp_path, name, reference, writer, side, step):
    path, x, expected, sd = official_checkpoint(tmp_path, reference, writer, side)
    model = noah.create_model(name, num_classes=CLASSES, pretrained=str(path)).eval()
    report = model.load_report
    assert report.ok, report.describe()
    assert any(step in s for s in report.steps), report.steps
    assert len(model.state_dict()) == len(sd)  # every official tensor found its place, nothing extra
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
    return model, path, x, expected


@pytest.mark.parametrize("name,reference,writer,side,step", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_official_family_loads_with_the_official_logits(tmp_path, name, reference, writer, side, step):
    check_family(tmp_path, name, reference, writer, side, step)


@pytest.mark.slow
@pytest.mark.parametrize("name,reference,writer,side,step", SLOW_FAMILIES, ids=[f[0] for f in SLOW_FAMILIES])
def test_wider_official_models_load_with_the_official_logits(tmp_path, name, reference, writer, side, step):
    check_family(tmp_path, name, reference, writer, side, step)


def test_official_gap_baseline_maps_its_linear_head(tmp_path):
    baseline = lambda p, x: resnet(p, x, False, [2, 2, 2, 2], gap_head)  # noqa: E731
    path, x, expected, _ = official_checkpoint(tmp_path, baseline, cnn_checkpoint, 64)
    model = noah.create_model("resnet18", head="gap", num_classes=CLASSES, pretrained=str(path)).eval()
    assert any("head.2" in s for s in model.load_report.steps)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def mobilenetv2_official(tmp_path_factory):
    """An official-layout MobileNetV2 x0.35 checkpoint (keys need mapping) and its reference logits."""
    return official_checkpoint(tmp_path_factory.mktemp("mnv2"), lambda p, x: mobilenetv2(p, x, 0.35), cnn_checkpoint, 64)


def test_timm_loads_official_weights_the_timm_way(mobilenetv2_official):
    """pretrained_cfg_overlay=dict(file=...) (what timm's train.py --pretrained-path does),
    checkpoint_path=..., and timm.models.load_checkpoint all give the official logits."""
    import timm
    from timm.models import load_checkpoint

    path, x, expected, _ = mobilenetv2_official
    via_overlay = timm.create_model(
        "noah_mobilenetv2_035", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=CLASSES
    ).eval()
    via_checkpoint_path = timm.create_model("noah_mobilenetv2_035", num_classes=CLASSES, checkpoint_path=str(path)).eval()
    via_load_checkpoint = timm.create_model("noah_mobilenetv2_035", num_classes=CLASSES).eval()
    load_checkpoint(via_load_checkpoint, str(path))
    with torch.no_grad():
        for model in (via_overlay, via_checkpoint_path, via_load_checkpoint):
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)


def test_official_weights_for_1000_classes_fine_tune_with_a_new_head(mobilenetv2_official):
    import timm

    path, x, _, sd = mobilenetv2_official
    model = timm.create_model("noah_mobilenetv2_035", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=3)
    assert model.head.num_classes == 3
    torch.testing.assert_close(model.backbone.conv_stem.weight, sd["features.0.0.weight"])
    assert any("another class count" in s for s in model.load_report.steps)


def test_narrow_deit_needs_the_pre_logits_layer(tmp_path):
    path, x, expected, _ = official_checkpoint(tmp_path, lambda p, x: deit(p, x, 96, depth=12), deit_checkpoint, 224)
    plain = noah.create_model("deit_tiny_050_patch16_224", num_classes=CLASSES)
    assert plain.pre_logits_size is None and plain.head.in_channels == 96  # the paper's parameter count
    with pytest.raises(noah.CheckpointError, match=r"build the model with pre_logits_size=192"):
        noah.load_official_checkpoint(plain, path)
    official = noah.create_model("deit_tiny_050_patch16_224", num_classes=CLASSES, pre_logits_size=192).eval()
    report = noah.load_official_checkpoint(official, path)
    assert report.ok and official.head_hidden_size == 192
    with torch.no_grad():
        torch.testing.assert_close(official(x), expected, rtol=1e-4, atol=1e-4)
        assert official.forward_head(official.forward_features(x), pre_logits=True).shape == (2, 192)
