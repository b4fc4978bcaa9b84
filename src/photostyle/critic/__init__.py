"""Aesthetic and quality critics: differentiable scores an optimisation can add as a loss term.

Every critic is a frozen :class:`Critic`: ``critic(image)`` gives ``(B,)`` scores of
``(B, 3, H, W)`` RGB in [0, 1], ``critic.loss(image)`` a scalar that decreases as quality
improves, with magnitudes of a few units for photos:

=======  =================  ======  ===================  ================================
name     score              better  loss                 data
=======  =================  ======  ===================  ================================
nima     mean rating 1..10  higher  ``10 - score``       trained weights, user supplied
brisque  about 0..100       lower   ``max(score,0)/10``  ships with photostyle
niqe     about 2.5..6       lower   ``score``            ships with photostyle
=======  =================  ======  ===================  ================================

:data:`DEFAULT_OFFLINE_CRITIC` is the one to use when no NIMA weights are available.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InputError
from .base import Critic
from .brisque import BRISQUE
from .niqe import NIQE
from .nima import NIMA, nima_vgg16, remap_state_dict

#: The offline critic to use by default. NIQE is a distance to a Gaussian model of pristine
#: statistics, so it is bounded below by 0 and has no learned regressor to extrapolate;
#: BRISQUE's RBF-SVR can be driven far below 0 (score -144 from 46 in 30 Adam steps of 2e-3
#: on a noisy photo) by imperceptible changes. NIQE's smooth default also agrees better with
#: finite differences along its gradient (5 % vs 19 % at 350 px). Its limits: it needs at least
#: two 96-pixel blocks and ignores the pixels past the last whole block.
DEFAULT_OFFLINE_CRITIC = "niqe"

_BUILDERS = {"nima": nima_vgg16, "brisque": BRISQUE, "niqe": NIQE}


def available_critics() -> tuple[str, ...]:
    """Names :func:`get_critic` accepts, ``"none"`` last."""
    return (*_BUILDERS, "none")


def get_critic(name: str, **kwargs: Any) -> Critic | None:
    """Build a critic by name.

    Args:
        name: one of :func:`available_critics`; ``"none"`` returns ``None`` (no critic term).
        **kwargs: passed to the builder: :func:`nima_vgg16` (``weights``), :class:`BRISQUE`
            (none), :class:`NIQE` (``block_size``, ``round_y``).

    Raises:
        InputError: unknown name (the message lists the valid ones) or bad arguments.
        WeightsError: NIMA weights missing or unreadable.
    """
    key = name.strip().lower()
    if key == "none":
        return None
    if key not in _BUILDERS:
        raise InputError(f"unknown critic {name!r}; expected one of {', '.join(available_critics())}")
    builder = _BUILDERS[key]
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as err:
        raise InputError(f"bad options {sorted(kwargs)} for critic {key!r} ({err}); it accepts {inspect.signature(builder)}") from err
    return builder(**kwargs)


__all__ = ["BRISQUE", "Critic", "DEFAULT_OFFLINE_CRITIC", "NIMA", "NIQE", "available_critics", "get_critic", "nima_vgg16", "remap_state_dict"]
