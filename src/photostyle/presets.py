"""Named speed/quality settings: ``fast``, ``balanced`` and ``best``.

A preset fixes the working size (long side in px), the number of optimisation
steps per level and the coarse-to-fine levels; every other setting keeps its
:class:`~photostyle.pipeline.TransferConfig` default unless overridden.
``balanced`` is :class:`~photostyle.pipeline.TransferConfig`'s own default.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .errors import InputError
from .pipeline import TransferConfig

__all__ = ["PRESETS", "preset_config"]

PRESETS: dict[str, dict[str, Any]] = {
    "fast": dict(size=224, iterations=30, levels=1),
    "balanced": dict(size=320, iterations=50, levels=1),
    "best": dict(size=448, iterations=80, levels=2),
}


def preset_config(name: str, **overrides: Any) -> TransferConfig:
    """The :class:`TransferConfig` of preset ``name``, with ``overrides`` applied on top.

    >>> preset_config("fast").size, preset_config("fast", iterations=2).iterations
    (224, 2)

    Raises:
        InputError: ``name`` is not a preset; the message lists the valid ones.
        TypeError: an override is not a field of :class:`TransferConfig`.
    """
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(TransferConfig(), **{**PRESETS[name], **overrides})
