"""Datasets: built-in digit scenes, ImageNet-layout image folders, COCO-format multi-label data."""

from noah.data.digits import generate_digit_scenes
from noah.data.folders import ImageFileDataset
from noah.data.resolve import BUILTIN_DATASETS, TASKS, DatasetInfo, create_dataset, default_cache_dir, resolve_dataset

__all__ = [
    "BUILTIN_DATASETS", "TASKS", "DatasetInfo", "ImageFileDataset", "create_dataset", "default_cache_dir",
    "generate_digit_scenes", "resolve_dataset",
]
