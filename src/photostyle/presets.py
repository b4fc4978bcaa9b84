"""Named speed/quality settings: ``fast``, ``balanced`` and ``best``.

A preset fixes the working size (long side in px) and the number of optimisation
steps; every other setting keeps its :class:`~photostyle.pipeline.TransferConfig`
default unless overridden.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .errors import InputError
from .pipeline import TransferConfig

__all__ = ["PRESETS", "preset_config"]

PRESETS: dict[str, dict[str, Any]] = {
    "fast": dict(size=256, iterations=40),
    "balanced": dict(size=384, iterations=150),
    "best": dict(size=512, iterations=300),
}


def preset_config(name: str, **overrides: Any) -> TransferConfig:
    """The :class:`TransferConfig` of preset ``name``, with ``overrides`` applied on top.

    >>> preset_config("fast").size, preset_config("fast", iterations=2).iterations
    (256, 2)

    Raises:
        InputError: ``name`` is not a preset; the message lists the valid ones.
        TypeError: an override is not a field of :class:`TransferConfig`.
    """
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(TransferConfig(), **{**PRESETS[name], **overrides})
