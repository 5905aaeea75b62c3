"""Bad input to the chip-store commands and readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from geochip.errors import StoreError
from geochip.store.reader import open_store


def test_info_on_a_folder_that_is_no_store(refuse, tmp_path: Path) -> None:
    refuse("info", str(tmp_path), error="StoreError", message="not a complete geochip store")


def test_open_store_on_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a complete geochip store"):
        open_store(tmp_path / "nothing")
