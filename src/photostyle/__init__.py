"""photostyle: Automated Deep Photo Style Transfer that stays a photograph.

The library's public API is :func:`photostyle.pipeline.transfer` (files) and
:func:`photostyle.pipeline.stylise` (tensors). Importing this package is cheap:
torch and the models load only when used.
"""

__version__ = "0.1.0"
