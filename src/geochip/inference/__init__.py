"""A trained model applied to whole scenes (:func:`~geochip.inference.run.predict`, also
``geochip.predict``: sliding windows, blended, into a COG) and rasters cut into tiles
(:func:`~geochip.inference.retile.retile`, also ``geochip.retile``).

The package is not named ``predict``: ``geochip.predict`` is the function.
"""

from __future__ import annotations

from .retile import retile
from .run import PredictResult, predict

__all__ = ["PredictResult", "predict", "retile"]
