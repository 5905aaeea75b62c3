"""Compatibility layers: other libraries' names on top of geochip's native API.

:mod:`geochip.compat.zen3geo` gives zen3geo's (torchdata DataPipe) functional names, for code
that broke when torchdata 0.10 removed DataPipes.
"""
