"""Tiny, seeded, untrained segmentation models for examples, tests and benchmarks.

``geochip predict geochip.testing.models:tiny_segmenter SCENE --out OUT.tif`` runs one from
the command line (a model named by import path is built by calling it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["tiny_segmenter"]


def tiny_segmenter(bands: int = 3, classes: int = 4, seed: int = 0) -> Any:
    """A few conv layers, (N, bands, H, W) -> (N, classes, H, W) logits; weights seeded."""
    import torch  # lazy: the torch extra

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(bands, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, classes, 1),
    ).eval()
