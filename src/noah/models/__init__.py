"""Backbone adapters, the paper's model zoo, PVT v1, MobileNetV3-Small, the model factory,
official-checkpoint loading and the saved-folder format; registers ``noah_*`` models with timm."""

from noah.models.adapter import EMBEDDING_POOLS, HEAD_TYPES, NOAHModel
from noah.models.cost import count_macs
from noah.models.factory import DEFAULT_PRESET, count_parameters, create_model, get_paper_model, list_models
from noah.models.folder import save_pretrained
from noah.models.mobilenetv3 import MobileNetV3Small
from noah.models.official import LoadReport, load_official_checkpoint
from noah.models.pvt import PyramidVisionTransformer
from noah.models.registry import registered_names
from noah.models.settings import BACKBONE_SETTINGS, BackboneFacts, backbone_facts
from noah.models.zoo import PAPER_MODELS, PaperModel

__all__ = [
    "EMBEDDING_POOLS",
    "HEAD_TYPES", "NOAHModel", "DEFAULT_PRESET", "count_macs", "count_parameters", "create_model", "get_paper_model",
    "list_models", "LoadReport", "load_official_checkpoint", "MobileNetV3Small", "PyramidVisionTransformer",
    "registered_names", "PAPER_MODELS", "PaperModel", "save_pretrained", "BACKBONE_SETTINGS", "BackboneFacts",
    "backbone_facts",
]
