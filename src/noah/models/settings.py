"""Which backbone settings a model can take: decided up front, from the backbone's constructor.

Some options of ``create_model`` (and of ``noah train``) reach the backbone's constructor and
only some backbones have them: ``img_size`` (transformers and MLP-mixers, whose position
embeddings depend on the input size), ``output_stride`` (dilated CNN stages), ``drop_path_rate``
(stochastic depth). An option a backbone does not take is an error naming the model and the
option, found by reading the constructor's signature -- never by trying and parsing the
exception text.
"""

from __future__ import annotations

import functools
import inspect
from typing import NamedTuple

import timm
import torch

from noah.errors import ConfigError
from noah.models.zoo import PaperModel, get_paper_model

__all__ = ["BACKBONE_SETTINGS", "BackboneFacts", "backbone_facts", "require_known_model"]

#: constructor arguments that only some backbones take
BACKBONE_SETTINGS = ("img_size", "output_stride", "drop_path_rate")


class BackboneFacts(NamedTuple):
    """What a backbone's class says about it.

    ``class_name``: the backbone's class; ``arguments``: its constructor's named arguments;
    ``fixed_input_size``: whether it only runs at the size it was built for (timm's
    ``pretrained_cfg["fixed_input_size"]``, e.g. ViTs); ``input_size``: its default ``(C, H, W)``.
    """

    class_name: str
    arguments: frozenset[str]
    fixed_input_size: bool
    input_size: tuple[int, int, int]

    def takes(self, setting: str) -> bool:
        return setting in self.arguments


def require_known_model(name: str) -> PaperModel | None:
    """The paper row of ``name``, ``None`` for a timm model, :class:`ConfigError` for neither."""
    paper = get_paper_model(name)
    if paper is None and not timm.is_model(name):
        raise ConfigError(
            f"unknown model {name!r}: expected one of the paper's models (`noah models`) or a timm model name"
        )
    return paper


@functools.lru_cache(maxsize=None)
def backbone_facts(name: str) -> BackboneFacts:
    """:class:`BackboneFacts` of ``name``'s backbone (a paper model or a timm name).

    The backbone is built once on the meta device (no memory, no weights) to learn its class;
    the answer is cached per name.
    """
    paper = require_known_model(name)

    def build() -> torch.nn.Module:
        return paper.build_backbone().module if paper is not None else timm.create_model(name, num_classes=0)

    try:
        with torch.device("meta"):
            module = build()
    except (RuntimeError, NotImplementedError):  # a constructor that computes with tensor values
        module = build()
    parameters = inspect.signature(type(module).__init__).parameters.values()
    named = frozenset(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    cfg = dict(getattr(module, "pretrained_cfg", None) or {})
    return BackboneFacts(
        class_name=type(module).__name__,
        arguments=named,
        fixed_input_size=bool(cfg.get("fixed_input_size", False)),
        input_size=tuple(cfg.get("input_size", (3, 224, 224))),
    )
