"""NOAH: Non-glObal Attentive Head -- pairwise object category attention for image classifiers."""

from noah.errors import CheckpointError, ConfigError, DataError, NoahError, ShapeError
from noah.head import NOAHHead, NOAHOutput
from noah import cpu_kernel  # noqa: F401  (the old name of noah.head.cpu_kernel, kept as an alias)
from noah.models import (
    PAPER_MODELS,
    NOAHModel,
    PaperModel,
    count_parameters,
    create_model,
    list_models,
    load_official_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "NOAHHead", "NOAHOutput", "NOAHModel", "PaperModel", "PAPER_MODELS", "create_model", "list_models",
    "count_parameters", "load_official_checkpoint", "NoahError", "ConfigError", "ShapeError",
    "CheckpointError", "DataError", "__version__",
]
