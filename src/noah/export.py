"""A trained model as a portable one: a saved folder, plus ONNX or TorchScript, each checked.

:func:`export_model` writes the timm / Hugging Face-style folder of
:mod:`noah.models.folder` (``config.json`` + ``model.safetensors``), which
``noah.create_model(pretrained=FOLDER)`` and timm load back, and for ``fmt="onnx"`` /
``"torchscript"`` also ``model.onnx`` / ``model.torchscript.pt`` in it. Both formats are checked
by running them on a batch size other than the one they were exported with, against the PyTorch
model; the result carries the largest absolute difference and the tolerance it was held to.

ONNX and TorchScript cannot hold the head's compiled CPU kernel: they hold the head's
``"plain"`` implementation (the reference formula, same numbers), on a copy of the model.
ONNX uses ``torch.onnx.export(dynamo=True)`` (opset 18 by default, at least 17) with a dynamic
batch dimension; TorchScript scripts the model where its backbone scripts, and traces it
otherwise (a traced model keeps the spatial size it was traced at).
"""

from __future__ import annotations

import copy
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from noah.errors import ConfigError
from noah.head import NOAHHead
from noah.models.folder import staged_folder, write_model_files

__all__ = ["FORMATS", "ExportCheck", "ExportResult", "export_model", "export_onnx", "export_torchscript", "plain_copy"]

FORMATS = ("safetensors", "onnx", "torchscript")
ONNX_NAME = "model.onnx"
TORCHSCRIPT_NAME = "model.torchscript.pt"
#: smallest ONNX opset accepted (the dynamo exporter's own default is 18)
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportCheck:
    """How an exported file compares with the PyTorch model on a fresh batch."""

    path: Path
    method: str
    max_abs_diff: float
    tolerance: float
    batch_size: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{self.path.name} ({self.method}): max |difference| to PyTorch {self.max_abs_diff:.3g} "
            f"on a batch of {self.batch_size} (tolerance {self.tolerance:.3g}): {verdict}"
        )


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote: the folder, its config, and the format file's check."""

    folder: Path
    config: dict[str, Any]
    check: ExportCheck | None


def plain_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose NOAH heads compute the plain formula (exportable)."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        if isinstance(module, NOAHHead):
            module.set_impl("plain")
    return twin


def _input_size(model: nn.Module, input_size: Sequence[int] | None) -> tuple[int, int, int]:
    size = tuple(input_size or getattr(model, "pretrained_cfg", {}).get("input_size") or (3, 224, 224))
    if len(size) != 3 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"input_size must be (channels, height, width), got {input_size!r}")
    return size  # type: ignore[return-value]


def _tolerance(reference: torch.Tensor, rtol: float, atol: float) -> float:
    return atol + rtol * float(reference.abs().max())


def _check(model: nn.Module, run, path: Path, method: str, size: tuple[int, int, int], batch: int, rtol: float, atol: float) -> ExportCheck:
    x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
    training = model.training
    try:
        with torch.no_grad():
            reference = model.eval()(x).float()
            out = torch.as_tensor(run(x)).float()
    finally:
        model.train(training)
    if out.shape != reference.shape:
        return ExportCheck(path, method, float("inf"), _tolerance(reference, rtol, atol), batch)
    return ExportCheck(path, method, float((out - reference).abs().max()), _tolerance(reference, rtol, atol), batch)


@contextmanager
def _new_file(path: str | os.PathLike) -> Iterator[Path]:
    """A partial file beside ``path`` to write and check; moved to ``path`` when the block ends
    without error, removed otherwise. ``path`` must not exist: nothing is overwritten."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} already exists; choose a new file (nothing is overwritten)")
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int] | None = None,
    opset: int = 18,
    batch_size: int = 2,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> ExportCheck:
    """Write ``model`` (``(B, C, H, W)`` images to ``(B, num_classes)`` logits) as ONNX with a
    dynamic batch dimension, input ``images``, output ``logits``; run it in onnxruntime on a batch
    of ``batch_size + 1`` and compare with PyTorch (``tolerance = atol + rtol * max |logit|``).

    ``input_size`` defaults to the model's ``pretrained_cfg``. The file is not overwritten.
    """
    import onnxruntime

    if opset < MIN_OPSET:
        raise ConfigError(f"ONNX opset {opset} is too old; expected {MIN_OPSET} or newer")
    path = Path(path)
    size = _input_size(model, input_size)
    with _new_file(path) as partial:
        torch.onnx.export(
            plain_copy(model), (torch.zeros(batch_size, *size),), str(partial), dynamo=True, opset_version=opset,
            input_names=["images"], output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False, verbose=False,
        )
        session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
        check = _check(
            model, lambda x: session.run(None, {"images": x.numpy()})[0], path, f"ONNX opset {opset}", size,
            batch_size + 1, rtol, atol,
        )
    return check


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int] | None = None,
    batch_size: int = 2,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> ExportCheck:
    """Write ``model`` as TorchScript (``torch.jit.save``): scripted where the backbone scripts,
    else traced at ``input_size``; reload it and compare with PyTorch on a batch of
    ``batch_size + 1``. The file is not overwritten."""
    path = Path(path)
    size = _input_size(model, input_size)
    twin = plain_copy(model)
    with warnings.catch_warnings(), _new_file(path) as partial:
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: known, checked below
        try:
            compiled, method = torch.jit.script(twin), "TorchScript (scripted)"
        except Exception:  # noqa: BLE001 - any backbone that does not script is traced instead
            compiled = torch.jit.trace(twin, torch.zeros(batch_size, *size), check_trace=False)
            method = f"TorchScript (traced at {size[1]}x{size[2]})"
        torch.jit.save(compiled, str(partial))
        check = _check(model, torch.jit.load(str(partial)), path, method, size, batch_size + 1, rtol, atol)
    return check


def export_model(
    model: nn.Module,
    folder: str | os.PathLike,
    fmt: str = "safetensors",
    class_names: Sequence[str] | None = None,
    task: str = "multiclass",
    data_config: dict[str, Any] | None = None,
    opset: int = 18,
) -> ExportResult:
    """Write ``model`` (a :class:`~noah.models.NOAHModel`) to the new ``folder``: ``config.json``
    (architecture, head settings, ``class_names``, ``task``, the data config's input size, mean,
    std, crop and interpolation) and ``model.safetensors``, plus ``model.onnx`` or
    ``model.torchscript.pt`` for ``fmt="onnx"`` / ``"torchscript"``, checked against PyTorch.

    The folder appears complete or not at all; a failed check leaves nothing behind and raises
    :class:`~noah.errors.ConfigError` naming the difference.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    input_size = (data_config or {}).get("input_size")
    check = None
    with staged_folder(folder) as staging:
        config = write_model_files(model, staging, class_names=class_names, task=task, data_config=data_config)
        if fmt == "onnx":
            check = export_onnx(model, staging / ONNX_NAME, input_size=input_size, opset=opset)
        elif fmt == "torchscript":
            check = export_torchscript(model, staging / TORCHSCRIPT_NAME, input_size=input_size)
        if check is not None and not check.ok:
            raise ConfigError(f"export check failed, nothing written: {check.describe()}")
    if check is not None:
        check = ExportCheck(Path(folder) / check.path.name, check.method, check.max_abs_diff, check.tolerance, check.batch_size)
    return ExportResult(Path(folder), config, check)
