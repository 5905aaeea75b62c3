"""Apply a trained model to whole scenes (sliding windows, blended, into a COG), and cut
rasters into tiles (:mod:`geochip.predict.retile`)."""

from __future__ import annotations

from .run import PredictResult, predict

__all__ = ["PredictResult", "predict"]
