"""Other libraries' APIs on geochip: code written for them runs with one changed import.

:mod:`geochip.compat.zen3geo` is zen3geo 0.6's public surface (its DataPipes and
torchdata's generic verbs), on geochip's readers; see docs/zen3geo.md. It needs the torch
extra, as zen3geo needed torch (``pip install 'geochip[torch]'``).
"""
