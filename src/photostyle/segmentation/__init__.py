"""Segmenter backends behind one contract, found by name through a registry.

>>> from photostyle.segmentation import available_segmenters, get_segmenter
>>> {"ade20k", "coseg"} <= set(available_segmenters())
True

Each backend module registers itself with :func:`register_segmenter` when imported here;
heavy dependencies (transformers) are imported only when a backend is built.
"""

from photostyle.masks import Segmentation
from photostyle.segmentation import ade20k, coseg, regmatch
from photostyle.segmentation.base import (
    Segmenter,
    available_segmenters,
    check_image,
    get_segmenter,
    register_segmenter,
)

__all__ = [
    "Segmentation",
    "Segmenter",
    "ade20k",
    "coseg",
    "regmatch",
    "available_segmenters",
    "check_image",
    "get_segmenter",
    "register_segmenter",
]
