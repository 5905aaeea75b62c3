"""The model side of predict: load a model file, normalise inputs, run batches on a device.

torch is an optional extra, imported when a model runs (``# lazy:``); without it
:class:`~geochip.errors.MissingExtraError` names the extra to install.

A model is a ``torch.nn.Module`` or any callable on ``(N, C, H, W)`` float32 tensors that
returns ``(N, K, H, W)``; from a file, a TorchScript archive (``torch.jit.save``) or a
``torch.export`` program (``torch.export.save``, ``.pt2``). Its outputs become
probabilities with ``activation`` (``softmax`` over K, ``sigmoid``, or ``none`` when the
model returns probabilities already); with ``tta`` the model also sees the batch flipped
left-right, up-down and both, and the four probabilities (flipped back) are averaged.

On a CUDA device a batch goes through pinned memory with a non-blocking copy; on the CPU
those steps are plain copies, so the CPU tests run the same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..core.files import sha256_file
from ..core.security import redact
from ..core.storage import join, read_bytes
from ..errors import InputError, MissingExtraError, ModelError

__all__ = [
    "Activation",
    "ModelRunner",
    "Normalization",
    "load_model",
    "model_checksum",
    "normalization_from_store",
]

Activation = Literal["softmax", "sigmoid", "none"]


def _torch() -> Any:
    try:
        import torch  # lazy: the torch extra
    except ImportError as err:
        raise MissingExtraError("torch", "torch") from err
    return torch


@dataclass(frozen=True)
class Normalization:
    """Per-band ``(x - mean) / std``, as in training (one value each, or one per band)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def arrays(self, bands: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Mean and std as (bands, 1, 1) float32, checked against the band count."""
        out = []
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, bands):
                raise InputError(
                    f"normalization {name} has {len(values)} values; the source has {bands} "
                    "bands: give one value or one per band"
                )
            arr = np.asarray(values, dtype=np.float32)
            out.append(np.broadcast_to(arr, (bands,)).reshape(bands, 1, 1).copy())
        if (out[1] == 0).any():
            raise InputError(f"normalization std must not be 0, got {list(self.std)}")
        return out[0], out[1]


def normalization_from_store(path: str | Path) -> Normalization:
    """The normalisation a chip dataset (a folder or URL, or its ``manifest.json``) was
    trained with, from its manifest:
    ``normalization: {mean, std}``, else the config's ``scale: {scale, offset}``."""
    text = str(path)
    manifest_path = text if text.endswith(".json") else join(text, "manifest.json")
    try:
        manifest = json.loads(read_bytes(manifest_path))
    except (OSError, ValueError) as err:
        raise InputError(
            f"{manifest_path}: cannot read a chip dataset's manifest ({redact(str(err))})"
        ) from None
    norm = manifest.get("normalization")
    if isinstance(norm, dict) and "mean" in norm and "std" in norm:
        mean, std = norm["mean"], norm["std"]
        return Normalization(
            tuple(np.atleast_1d(mean).tolist()), tuple(np.atleast_1d(std).tolist())
        )
    scale = (manifest.get("config") or {}).get("scale")
    if isinstance(scale, dict) and scale.get("scale") is not None:
        # x * scale + offset == (x - (-offset / scale)) / (1 / scale)
        s, o = float(scale["scale"]), float(scale.get("offset") or 0.0)
        return Normalization((-o / s,), (1.0 / s,))
    raise InputError(
        f"{manifest_path} records no normalization (no 'normalization' and no config 'scale'); "
        "pass normalize={'mean': [...], 'std': [...]} as used in training"
    )


def load_model(path: str | Path) -> Any:
    """A TorchScript archive or a ``torch.export`` program (a path or URL), ready to call."""
    torch = _torch()
    try:  # a local file or one GET; both formats load from memory
        data = read_bytes(path)
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(f"model file {path} does not exist") from None
    errors = []
    if not zipfile.is_zipfile(io.BytesIO(data)):
        errors.append("the file is not a zip archive, which both formats are")
    else:
        try:
            return torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        except Exception as err:  # not a TorchScript archive
            errors.append(f"TorchScript: {str(err).splitlines()[0]}")
        quiet = logging.getLogger("torch.export")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # it logs a traceback before raising
        try:
            return torch.export.load(io.BytesIO(data)).module()
        except Exception as err:  # not an exported program either
            errors.append(f"torch.export: {str(err).splitlines()[0]}")
        finally:
            quiet.setLevel(level)
    raise ModelError(
        f"{path}: not a TorchScript archive (torch.jit.save) nor a torch.export program "
        f"(torch.export.save): {'; '.join(errors)}"
    )


def model_checksum(model: Any, path: str | Path | None = None) -> str | None:
    """sha256 of the model file, or of a Module's parameters and buffers (names, dtypes,
    shapes and bytes, in order); None for a plain callable."""
    if path is not None:
        return sha256_file(path)
    state = getattr(model, "state_dict", None)
    if state is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in state().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(_torch().uint8).numpy().tobytes())
    return digest.hexdigest()


class ModelRunner:
    """Runs batches (source dtype, numpy) through the model on ``device``; returns
    probabilities as float32 numpy (N, K, H, W)."""

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        bands: int,
        device: str = "cpu",
        normalize: Normalization | None = None,
        activation: Activation = "softmax",
        tta: bool = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        if activation not in ("softmax", "sigmoid", "none"):
            raise InputError(f"activation must be softmax, sigmoid or none, got {activation!r}")
        torch = _torch()
        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device='cuda' was asked for but torch sees no CUDA device")
        if self.device.type == "mps" and not torch.backends.mps.is_available():
            raise InputError("device='mps' was asked for but torch sees no MPS device")
        self.pin = self.device.type == "cuda"
        self.model = model
        if isinstance(model, torch.nn.Module):
            with contextlib.suppress(NotImplementedError):  # torch.export: eval already
                model.eval()
            model.to(self.device)
        self.bands = bands
        self.norm = normalize.arrays(bands) if normalize is not None else None
        self.activation = activation
        self.tta = tta
        self.classes = list(classes) if classes is not None else None
        self.calls = 0  # batches the model was called on (TTA counts one)
        self.seconds = 0.0  # time spent in the model (with the copies to and from it)

    def _prepare(self, batch: npt.NDArray[Any]) -> Any:
        x = batch.astype(np.float32, copy=False)
        if self.norm is not None:
            x = (x - self.norm[0]) / self.norm[1]
        tensor = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.pin:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def _forward(self, x: Any) -> Any:
        torch = self.torch
        try:
            y = self.model(x)
        except Exception as err:
            raise ModelError(
                f"the model failed on a batch of shape {tuple(x.shape)} (N, C, H, W): "
                f"{' '.join(str(err).split())[:300]}; check the bands and the chip size"
            ) from err
        if isinstance(y, np.ndarray):
            y = torch.from_numpy(y)
        if isinstance(y, dict) and "out" in y:  # torchvision segmentation models
            y = y["out"]
        if not isinstance(y, torch.Tensor):
            raise ModelError(
                f"the model returned {type(y).__name__}; a (N, K, H, W) tensor was expected"
            )
        if y.ndim == 3:
            y = y[:, None]
        if y.ndim != 4 or y.shape[0] != x.shape[0] or tuple(y.shape[2:]) != tuple(x.shape[2:]):
            raise ModelError(
                f"the model returned shape {tuple(y.shape)} for input {tuple(x.shape)}; "
                f"expected (N={x.shape[0]}, K, H={x.shape[2]}, W={x.shape[3]}): the same "
                "spatial size as its input"
            )
        if (
            self.classes is not None
            and y.shape[1] != len(self.classes)
            and not (y.shape[1] == 1 and len(self.classes) == 2)
        ):
            raise ModelError(
                f"the model returned {y.shape[1]} channels; {len(self.classes)} classes were "
                f"named ({', '.join(self.classes)})"
            )
        y = y.float()
        if self.activation == "softmax" and y.shape[1] > 1:
            y = torch.softmax(y, dim=1)
        elif self.activation == "sigmoid" or (self.activation == "softmax" and y.shape[1] == 1):
            y = torch.sigmoid(y)
        return y

    def __call__(self, batch: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Probabilities (N, K, H, W) float32 for a (N, C, H, W) batch."""
        if batch.shape[1] != self.bands:
            raise ModelError(f"batch has {batch.shape[1]} bands, expected {self.bands}")
        torch = self.torch
        started = time.perf_counter()
        with torch.inference_mode():
            x = self._prepare(batch)
            self.calls += 1
            y = self._forward(x)
            if self.tta:
                for dims in ((3,), (2,), (2, 3)):
                    y = y + torch.flip(self._forward(torch.flip(x, dims)), dims)
                y = y / 4
            out: npt.NDArray[np.float32] = y.to("cpu").numpy().astype(np.float32, copy=False)
        self.seconds += time.perf_counter() - started
        return out
