"""NIMA, Neural Image Assessment (Talebi & Milanfar 2018), as a differentiable critic.

A backbone CNN, dropout and a 10-way softmax head predict the distribution of human ratings
1..10 (AVA); the score is its mean ``sum_i i * p_i``. :class:`NIMA` accepts any backbone that
maps an ImageNet-normalised ``(B, 3, 224, 224)`` batch to ``(B, F)`` features;
:func:`nima_vgg16` builds the VGG16 one with torchvision's module layout.

Weights. No NIMA weights are published on a model hub with a stable URL, so there is no
default download. :func:`nima_vgg16` loads

* a local file (``torch.load(weights_only=True)`` or ``.safetensors``), or
* an ``https://`` URL into the torch hub cache with ``load_state_dict_from_url(check_hash=True)``
  (the file name must then carry the sha256 prefix, ``name-<hash8>.pth``, as torch hub requires).

:func:`remap_state_dict` accepts the key layouts of the public PyTorch VGG16 NIMA checkpoints:

* kentsyx/Neural-IMage-Assessment (Yunxiao Shi, MIT; checkpoint ``epoch-82.pth`` linked from
  its README): ``features.{0,2,...,28}.*`` then ``classifier.1.*`` = ``Linear(25088, 10)``
  directly on the flattened 7x7x512 conv features (no fc6/fc7) -> ``fc_layers=False``;
* the paper's layout, torchvision VGG16 with ``classifier.6`` replaced by ``Linear(4096, 10)``
  (``features.*``, ``classifier.{0,3,6}.*``, optionally under a ``_baseline_model.`` or
  ``model.`` prefix) -> ``fc_layers=True``;
* either one saved from ``nn.DataParallel`` (``module.`` prefix).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import WeightsError
from ..features import vgg_features
from ..weights import IMAGENET_MEAN, IMAGENET_STD, cache_dir
from .base import Critic, check_image

#: where :func:`nima_vgg16` looks when ``weights="default"``: ``$PHOTOSTYLE_NIMA_WEIGHTS`` or this file in the cache.
DEFAULT_FILE_NAME = "nima-vgg16.pth"
_HOW_TO_GET = (
    "download the VGG16 NIMA checkpoint of github.com/kentsyx/Neural-IMage-Assessment (epoch-82.pth, linked "
    "from its README) and pass its path as weights=, set PHOTOSTYLE_NIMA_WEIGHTS=PATH, or copy it to {default}; "
    "or use the 'brisque' or 'niqe' critic, which need no download"
)


class NIMA(Critic):
    """Mean aesthetic score 1..10 of a rating distribution predicted by a CNN; higher is better.

    Input is resized to ``input_size`` squared (bilinear, antialiased, differentiable) and
    normalised with the ImageNet mean and std, as NIMA was trained.

    :meth:`loss` is ``10 - score`` (the paper's use as a loss), 0..9.

    Args:
        backbone: maps ``(B, 3, input_size, input_size)`` normalised input to ``(B, in_features)``.
        in_features: F.
        dropout: dropout before the head (0.75 in the paper; inactive, critics stay in eval mode).
        input_size: side of the square input, 224.

    Example:
        >>> tiny = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> NIMA(tiny, 4)(torch.rand(2, 3, 50, 70)).shape
        torch.Size([2])
    """

    name = "nima"
    higher_is_better = True

    def __init__(self, backbone: nn.Module, in_features: int, *, dropout: float = 0.75, input_size: int = 224) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, 10))
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("ratings", torch.arange(1.0, 11.0), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def distribution(self, image: torch.Tensor) -> torch.Tensor:
        """Predicted rating distribution ``(B, 10)`` (rows sum to 1) of ``(B, 3, H, W)`` RGB in [0, 1]."""
        check_image(image, 2, self.name)
        size = (self.input_size, self.input_size)
        x = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean.to(x)) / self.std.to(x)
        return torch.softmax(self.head(self.backbone(x)), dim=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Mean scores ``(B,)`` in [1, 10] of ``(B, 3, H, W)`` RGB in [0, 1]."""
        return self.distribution(image) @ self.ratings.to(image.dtype)

    def loss_from_score(self, score: torch.Tensor) -> torch.Tensor:
        """``10 - score`` (Talebi & Milanfar): higher NIMA is better."""
        return 10.0 - score


class VGG16Backbone(nn.Module):
    """torchvision VGG16 up to the features NIMA's head reads, with torchvision's module names.

    ``features`` (13 convs) -> ``AdaptiveAvgPool2d(7)`` -> flatten -> with ``fc_layers``
    torchvision's ``classifier[:6]`` (fc6 4096, ReLU, dropout, fc7 4096, ReLU, dropout), so
    ``out_features`` is 4096, else 25088.
    """

    def __init__(self, *, fc_layers: bool) -> None:
        super().__init__()
        self.features = vgg_features("vgg16")
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = (
            nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout())
            if fc_layers
            else nn.Identity()
        )
        self.out_features = 4096 if fc_layers else 25088

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 224, 224)`` normalised -> ``(B, out_features)``."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def remap_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Rename a public VGG16 NIMA checkpoint's keys to :func:`nima_vgg16`'s.

    Args:
        state: name -> tensor in one of the layouts listed in the module docstring.

    Returns:
        the renamed state dict (``backbone.features.*``, ``backbone.classifier.{0,3}.*``,
        ``head.1.*``) and whether it has the fc6/fc7 layers.

    Raises:
        WeightsError: the layout is none of the known ones.
    """
    state = {re.sub(r"^(module\.)?(_baseline_model\.|model\.)?", "", key): value for key, value in state.items()}
    head = "classifier.1" if "classifier.1.weight" in state else "classifier.6"
    fc_layers = head == "classifier.6"
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("features."):
            renamed[f"backbone.{key}"] = value
        elif key.startswith(head + "."):
            renamed["head.1." + key.removeprefix(head + ".")] = value
        elif fc_layers and re.match(r"classifier\.[03]\.", key):
            renamed[f"backbone.{key}"] = value
    if "head.1.weight" not in renamed or renamed["head.1.weight"].shape[0] != 10:
        sample = ", ".join(list(state)[:4])
        raise WeightsError(
            f"not a VGG16 NIMA checkpoint: expected a 10-way head at classifier.1 (kentsyx) or classifier.6 "
            f"(torchvision layout) but the keys start {sample}"
        )
    return renamed, fc_layers


def _read_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    if isinstance(weights, str) and weights.startswith(("https://", "http://")):
        try:
            state = torch.hub.load_state_dict_from_url(weights, map_location="cpu", check_hash=True, weights_only=True)
        except (OSError, RuntimeError) as err:
            raise WeightsError(f"cannot download NIMA weights from {weights} ({err}); " + _HOW_TO_GET.format(default=cache_dir() / DEFAULT_FILE_NAME)) from err
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"NIMA weights file {path} does not exist; " + _HOW_TO_GET.format(default=cache_dir() / DEFAULT_FILE_NAME))
        try:
            state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
        except (SafetensorError, RuntimeError, OSError, EOFError, ValueError) as err:
            raise WeightsError(f"cannot read {path} as NIMA weights ({err}); expected a state dict (.pth or .safetensors)") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"NIMA weights {weights} are not a state dict (name -> tensor)")
    return state


def nima_vgg16(weights: str | Path | None = "default", *, fc_layers: bool = False) -> NIMA:
    """VGG16 NIMA with trained weights.

    Args:
        weights: ``"default"`` (``$PHOTOSTYLE_NIMA_WEIGHTS``, else ``nima-vgg16.pth`` in
            :func:`photostyle.weights.cache_dir`), a file path, an ``https://`` URL (torch hub
            cache, hash checked), or ``None`` for an untrained network (tests only).
        fc_layers: architecture when ``weights`` is ``None``; otherwise read from the checkpoint.

    Returns:
        a frozen :class:`NIMA` in eval mode.

    Raises:
        WeightsError: the weights are missing (the message says how to get them), unreadable
            or not a VGG16 NIMA checkpoint.
    """
    state = None
    if weights is not None:
        if weights == "default":
            weights = os.environ.get("PHOTOSTYLE_NIMA_WEIGHTS") or cache_dir() / DEFAULT_FILE_NAME
        state, fc_layers = remap_state_dict(_read_state_dict(weights))
    backbone = VGG16Backbone(fc_layers=fc_layers)
    model = NIMA(backbone, backbone.out_features)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise WeightsError(f"NIMA weights {weights} do not fit VGG16 NIMA: {err}") from err
    return model
