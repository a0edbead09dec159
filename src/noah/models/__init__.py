"""Backbone adapters, the paper's model zoo, PVT v1, and the model factory."""

from noah.models.adapter import HEAD_TYPES, NOAHModel
from noah.models.cost import count_macs
from noah.models.factory import DEFAULT_PRESET, count_parameters, create_model, get_paper_model, list_models
from noah.models.official import LoadReport, load_official_checkpoint
from noah.models.pvt import PyramidVisionTransformer
from noah.models.registry import registered_names
from noah.models.settings import BACKBONE_SETTINGS, BackboneFacts, backbone_facts
from noah.models.zoo import PAPER_MODELS, PaperModel

__all__ = [
    "HEAD_TYPES", "NOAHModel", "DEFAULT_PRESET", "count_macs", "count_parameters", "create_model", "get_paper_model",
    "list_models", "LoadReport", "load_official_checkpoint", "PyramidVisionTransformer", "registered_names",
    "PAPER_MODELS", "PaperModel", "BACKBONE_SETTINGS", "BackboneFacts", "backbone_facts",
]
