"""The segmenter contract and the registry that feeds the command line's choices."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, TypeVar

import torch

from photostyle.errors import InputError
from photostyle.masks import Segmentation

__all__ = ["Segmenter", "available_segmenters", "check_image", "get_segmenter", "register_segmenter"]

_REGISTRY: dict[str, type[Segmenter]] = {}
S = TypeVar("S", bound="type[Segmenter]")


class Segmenter(ABC):
    """Turns a photo into labelled segment masks.

    Attributes:
        name: the registry name, set by :func:`register_segmenter`.
        labelled: ``True`` if labels are semantic names (e.g. ADE20K's "sky"), so they can be
            grouped by WordNet similarity; ``False`` if they are placeholders ("segment-0").
        last_pairing: for backends that pair regions of the two photos, the record of the latest
            :meth:`segment_pair`: an object whose ``to_dict()["pairs"]`` holds one dict per label
            with ``"label"``, ``"source"``, ``"similarity"`` and ``"confidence"``; else ``None``.
    """

    name: ClassVar[str] = ""
    labelled: ClassVar[bool] = False
    last_pairing: Any = None

    @abstractmethod
    def segment(self, image: torch.Tensor) -> Segmentation:
        """Segment one photo.

        Args:
            image: ``(1, 3, H, W)`` float RGB in [0, 1].

        Returns:
            Masks ``(1, K, H, W)`` in [0, 1] with ``K`` distinct labels.
        """

    def segment_pair(self, content: torch.Tensor, style: torch.Tensor) -> tuple[Segmentation, Segmentation]:
        """Segment a content and a style photo, ``(1, 3, H, W)`` and ``(1, 3, H', W')`` in [0, 1].

        The default segments each alone; co-segmentation backends override it to look at both.
        """
        return self.segment(content), self.segment(style)


def register_segmenter(name: str) -> Callable[[S], S]:
    """Class decorator adding a :class:`Segmenter` subclass to the registry under ``name``."""

    def add(cls: S) -> S:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a segmenter named {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def available_segmenters() -> list[str]:
    """Names of the registered segmenters, sorted."""
    return sorted(_REGISTRY)


def get_segmenter(name: str, **kwargs: Any) -> Segmenter:
    """Build the segmenter registered as ``name`` with its keyword arguments.

    Raises:
        InputError: no segmenter has that name; the message lists the valid ones.
    """
    if name not in _REGISTRY:
        raise InputError(f"unknown segmenter {name!r}; choose one of: {', '.join(available_segmenters())}")
    return _REGISTRY[name](**kwargs)


def check_image(image: torch.Tensor) -> None:
    """Raise :class:`InputError` unless ``image`` is a ``(1, 3, H, W)`` floating-point tensor."""
    if not (isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[:2] == (1, 3)
            and image.is_floating_point()):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"expected one float RGB image of shape (1, 3, H, W) in [0, 1] but received {got}")
