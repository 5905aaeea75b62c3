"""PyTorch and friends (an optional extra): map-style and streaming datasets, collate, the
Lightning data module.

Every module here needs torch, so importing any of them without it raises
:class:`~geochip.errors.MissingExtraError` naming the extra (``pip install 'geochip[torch]'``).
"""

from ..errors import MissingExtraError

try:
    import torch  # noqa: F401 - the check above, made once for every module here
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise MissingExtraError("torch", "torch") from err
