"""Datasets: built-in digit miniatures, image folders, COCO, Pascal VOC, iNaturalist, Market-1501."""

from noah.data.builtins import BUILTIN_DATASETS, builtin_root, default_cache_dir
from noah.data.digits import generate_digit_scenes
from noah.data.folders import ImageFileDataset
from noah.data.inat import INatDataset
from noah.data.market1501 import ReIDEvalDataset, ReIDTrainDataset
from noah.data.resolve import FORMATS, TASKS, DatasetInfo, create_dataset, detect_formats, resolve_dataset
from noah.data.samplers import class_balanced_sampler, class_balanced_weights
from noah.data.voc import VOCDataset

__all__ = [
    "BUILTIN_DATASETS", "FORMATS", "TASKS", "DatasetInfo", "INatDataset", "ImageFileDataset", "ReIDEvalDataset",
    "ReIDTrainDataset", "VOCDataset", "builtin_root", "class_balanced_sampler", "class_balanced_weights",
    "create_dataset", "default_cache_dir", "detect_formats", "generate_digit_scenes", "resolve_dataset",
]
