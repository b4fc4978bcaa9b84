"""The friendly entry point for notebooks and scripts: photos in any form in, a result out.

>>> import photostyle
>>> result = photostyle.transfer("examples/rocket.jpg", "examples/coffee.png", preset="fast")  # doctest: +SKIP
>>> result.save("rocket-coffee.jpg")  # doctest: +SKIP

:func:`transfer` takes file paths, PIL images, NumPy arrays or tensors, and any setting of
:class:`~photostyle.settings.TransferConfig` as a keyword. A :class:`Stylist` holds one set of
settings for many photos; the feature network is loaded once per process either way
(:func:`photostyle.features.get_encoder`), so the second photo starts at once.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from . import io
from .errors import InputError
from .masks import Segmentation
from .pipeline import TransferResult, stylise
from .runtime import check_photo_size
from .settings import TransferConfig, from_preset

__all__ = ["Stylist", "as_image", "transfer"]

Photo = str | os.PathLike | np.ndarray | torch.Tensor | Any  # Any: a PIL image


def as_image(photo: Photo) -> torch.Tensor:
    """A photo in any common form as a ``(1, 3, H, W)`` float32 tensor in [0, 1] (sRGB).

    Args:
        photo: a file path (read with :func:`photostyle.io.load_image`: EXIF orientation, ICC
            profiles, 16-bit), a PIL image, a NumPy array ``(H, W, 3)`` (uint8, uint16, or float in
            [0, 1]), or a tensor ``(3, H, W)`` or ``(1, 3, H, W)`` in [0, 1].

    Raises:
        InputError: anything else, saying what was expected and what arrived.
    """
    if isinstance(photo, (str, os.PathLike)):
        return io.load_image(photo).tensor
    if hasattr(photo, "convert") and hasattr(photo, "size"):  # PIL, without importing it
        photo = np.asarray(photo.convert("RGB"))
    if isinstance(photo, np.ndarray):
        if photo.ndim != 3 or photo.shape[2] != 3:
            raise InputError(f"expected an array of shape (H, W, 3) but received {photo.shape}")
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(photo.dtype, 1.0)
        photo = torch.from_numpy(np.ascontiguousarray(photo).astype(np.float32) / scale).permute(2, 0, 1)
    if isinstance(photo, torch.Tensor):
        image = photo.unsqueeze(0) if photo.ndim == 3 else photo
        if image.ndim != 4 or image.shape[:2] != (1, 3) or not image.is_floating_point():
            raise InputError(f"expected a float tensor of shape (3, H, W) or (1, 3, H, W) but received "
                             f"{photo.dtype} {tuple(photo.shape)}")
        return image.float().clamp(0, 1)
    raise InputError(f"expected a path, a PIL image, a NumPy array or a tensor but received {type(photo).__name__}")


class Stylist:
    """One set of settings, applied to as many photo pairs as you like.

    Args:
        preset: ``"fast"``, ``"balanced"`` (default) or ``"best"``.
        **settings: any field of :class:`~photostyle.settings.TransferConfig`, checked here.

    Example:
        >>> stylist = Stylist(preset="fast", strength=0.8)
        >>> stylist.config.size, stylist.config.strength
        (224, 0.8)
    """

    def __init__(self, preset: str = "balanced", **settings: Any) -> None:
        self.config: TransferConfig = from_preset(preset, **settings)

    def __call__(
        self, content: Photo, style: Photo, *, content_mask: str | os.PathLike | Segmentation | None = None,
        style_mask: str | os.PathLike | Segmentation | None = None,
    ) -> TransferResult:
        """Give ``content`` the look of ``style``; masks are DPST colour masks (paths) or :class:`Segmentation`.

        Returns:
            :class:`~photostyle.pipeline.TransferResult`: ``.image`` ``(1, 3, H, W)`` at the content's
            size, ``.to_pil()``, ``.save(path)``, ``.segmentation``, ``.seconds``, ``.loss``, ``.to_json()``.
        """
        content_image, style_image = as_image(content), as_image(style)
        for name, image in (("content", content_image), ("style", style_image)):
            check_photo_size(name, *image.shape[-2:], self.config)
        return stylise(content_image, style_image, content_mask, style_mask, self.config)


def transfer(content: Photo, style: Photo, *, preset: str = "balanced", **settings: Any) -> TransferResult:
    """Give ``content`` the look of ``style``: ``Stylist(preset, **settings)(content, style)``.

    ``content_mask`` and ``style_mask`` may be given as keywords too.
    """
    masks = {k: settings.pop(k) for k in ("content_mask", "style_mask") if k in settings}
    return Stylist(preset, **settings)(content, style, **masks)
