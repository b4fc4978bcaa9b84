"""The contract every critic follows, and its input check."""

from __future__ import annotations

import hashlib
import io
from importlib import resources

import numpy as np
import torch
from torch import nn

from ..errors import InputError, WeightsError


def load_packaged_npz(file_name: str, sha256: str) -> dict[str, np.ndarray]:
    """Read ``photostyle/critic/data/<file_name>``, verified by sha256, without pickle."""
    data = resources.files(__package__).joinpath("data").joinpath(file_name).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise WeightsError(f"{file_name} in the photostyle package has sha256 {digest} but expected {sha256}; reinstall photostyle")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def check_image(image: torch.Tensor, min_size: int, critic: str) -> None:
    """Raise :class:`InputError` unless ``image`` is ``(B, 3, H, W)`` floating with H, W >= ``min_size``."""
    if image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise InputError(f"{critic}: expected a float image of shape (B, 3, H, W) but received {image.dtype} {tuple(image.shape)}")
    if min(image.shape[-2:]) < min_size:
        raise InputError(f"{critic}: expected H and W of at least {min_size} pixels but received {tuple(image.shape[-2:])}; use a larger working size")


class Critic(nn.Module):
    """A differentiable image-quality score, frozen (its parameters never train).

    Subclasses set :attr:`name`, :attr:`higher_is_better` and implement :meth:`forward` and
    :meth:`loss_from_score`.

    Attributes:
        name: registry key, e.g. ``"brisque"``.
        higher_is_better: ``True`` for aesthetic scores (NIMA), ``False`` for distortion
            scores (BRISQUE, NIQE).
    """

    name: str
    higher_is_better: bool

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Score each image.

        Args:
            image: ``(B, 3, H, W)`` RGB in [0, 1].

        Returns:
            ``(B,)`` scores, differentiable with respect to ``image``.
        """
        raise NotImplementedError

    def loss_from_score(self, score: torch.Tensor) -> torch.Tensor:
        """Map ``(B,)`` scores to ``(B,)`` losses that decrease as quality improves, of order 1..10."""
        raise NotImplementedError

    def loss(self, image: torch.Tensor) -> torch.Tensor:
        """Scalar loss (mean over the batch) that decreases when quality improves.

        Args:
            image: ``(B, 3, H, W)`` RGB in [0, 1].

        Returns:
            ``()`` tensor, differentiable with respect to ``image``.
        """
        return self.loss_from_score(self(image)).mean()

    def train(self, mode: bool = True) -> Critic:
        """Critics stay in eval mode (dropout off): a score must not be random."""
        return super().train(False)
