"""photostyle: Automated Deep Photo Style Transfer that stays a photograph.

>>> import photostyle
>>> result = photostyle.transfer("examples/rocket.jpg", "examples/coffee.png", preset="fast")  # doctest: +SKIP
>>> result.to_pil().show()  # doctest: +SKIP

The top level offers :func:`transfer`, :class:`Stylist`, :class:`TransferConfig` and
:func:`from_preset`; the method itself is :mod:`photostyle.pipeline`. Importing this package is
cheap: torch and the models load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Stylist", "TransferConfig", "from_preset", "transfer"]

_LAZY = {"Stylist": "api", "transfer": "api", "TransferConfig": "settings", "from_preset": "settings"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
