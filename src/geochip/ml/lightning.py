"""``ChipDataModule``: train/val/test DataLoaders over a chip dataset, for Lightning.

Lightning is an optional extra (``pip install 'geochip[lightning]'``). Without it,
``geochip.ChipDataModule`` still exists (so ``import geochip`` and ``dir(geochip)`` keep
working), and making one raises :class:`~geochip.errors.MissingExtraError` naming the extra.

Example:
    >>> import geochip
    >>> try:
    ...     dm = geochip.ChipDataModule("my-dataset")
    ... except geochip.errors.MissingExtraError as err:
    ...     print(err.extra)
    ... else:
    ...     print("lightning")  # doctest: +SKIP
    lightning
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from ..errors import MissingExtraError
from .torch import ChipDataset, collate_chips

__all__ = [
    "ChipDataModule",
    "lightning_available",
]


def lightning_available() -> bool:
    """Whether ``lightning`` (or the older ``pytorch_lightning``) can be imported."""
    return any(importlib.util.find_spec(m) is not None for m in ("lightning", "pytorch_lightning"))


def _base() -> type:
    try:
        import lightning  # lazy: the lightning extra

        return lightning.LightningDataModule  # type: ignore[no-any-return]
    except ImportError:
        pass
    try:
        import pytorch_lightning  # lazy: the lightning extra

        return pytorch_lightning.LightningDataModule  # type: ignore[no-any-return]
    except ImportError:
        return object


class _ChipDataModuleMixin:
    """DataLoaders for the train, val and test splits of one store."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 16,
        num_workers: int = 2,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        shuffle: bool = True,
    ) -> None:
        if not lightning_available():
            raise MissingExtraError("lightning", "lightning")
        super().__init__()
        self.path = Path(path)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.transforms = transforms
        self.shuffle = shuffle

    def _loader(self, split: str, shuffle: bool) -> Any:
        return DataLoader(
            ChipDataset(self.path, split=split, transforms=self.transforms),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_chips,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> Any:
        """Shuffled batches of the train split."""
        return self._loader("train", self.shuffle)

    def val_dataloader(self) -> Any:
        """Batches of the val split, in index order."""
        return self._loader("val", False)

    def test_dataloader(self) -> Any:
        """Batches of the test split, in index order."""
        return self._loader("test", False)


ChipDataModule: Any = type("ChipDataModule", (_ChipDataModuleMixin, _base()), {})

ChipDataModule.__doc__ = _ChipDataModuleMixin.__doc__

ChipDataModule.__module__ = __name__
