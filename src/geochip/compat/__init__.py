"""Other libraries' APIs on geochip: code written for them runs with one changed import.

:mod:`geochip.compat.zen3geo` is zen3geo 0.6's public surface (its DataPipes and
torchdata's generic verbs), on geochip's readers; see docs/zen3geo.md. Its stages are
``torch.utils.data.IterableDataset``s, so it needs the torch extra, as zen3geo needed torch:
importing it without torch raises :class:`~geochip.errors.MissingExtraError` naming the
extra (``pip install 'geochip[torch]'``), the check :mod:`geochip.ml` makes.
"""

from .. import ml  # noqa: F401 - the torch check (MissingExtraError), made in one place
