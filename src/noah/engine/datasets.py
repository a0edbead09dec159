"""The datasets of a run: what ``--data`` names, resolved once for training and evaluation alike."""

from __future__ import annotations

from typing import Any, Callable

from torch.utils.data import Dataset

from noah.data import DatasetInfo, create_dataset, resolve_dataset
from noah.engine.config import TrainConfig
from noah.engine.distributed import DistEnv, main_rank_first
from noah.errors import DataError

__all__ = ["resolve_data", "build_dataset"]


def _builtin_sizes(config: TrainConfig) -> dict[str, Any]:
    """Sizes for built-in datasets: ``data_size`` images, canvases drawn at the input size (the
    scenes scale with the canvas, so this equals drawing at 224 px and resizing, only cheaper)."""
    kwargs: dict[str, Any] = {}
    if config.data_size:
        kwargs["num_train"], kwargs["num_val"] = config.data_size
    if config.image_size:
        kwargs["image_size"] = config.image_size
    return kwargs


def resolve_data(config: TrainConfig, env: DistEnv, data: str | None = None, task: str | None = None) -> DatasetInfo:
    """The :class:`~noah.data.DatasetInfo` of ``data`` (default: the config's), for ``task``
    (default: the config's, else detected).

    Built-in datasets are generated on rank 0 first (then read from the cache by the others) at
    the sizes the config gives when ``data`` is the config's own dataset; if rank 0 cannot
    resolve the data, every rank stops with its error.
    """
    name = config.data if data is None else data
    sizes = _builtin_sizes(config) if name == config.data else {}
    return main_rank_first(lambda: resolve_dataset(name, task=task or config.task, **sizes), env)


def build_dataset(config: TrainConfig, info: DatasetInfo, split: str, transform: Callable,
                  skip_bad_images: bool | None = None) -> Dataset:
    """The ``split`` of ``info`` with ``transform``; unreadable images fail or are skipped as the
    config (or ``skip_bad_images``) says. An empty split is a :class:`DataError`."""
    skip = config.skip_bad_images if skip_bad_images is None else skip_bad_images
    dataset = create_dataset(info, split, transform=transform, on_bad_image="skip" if skip else "error")
    if len(dataset) == 0:
        raise DataError(f"{info.root}: the {split} split holds no images")
    return dataset
