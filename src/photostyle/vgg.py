"""The layer layouts of VGG16 and VGG19 as torchvision builds them.

Shared by :mod:`photostyle.features` (which builds the networks) and :mod:`photostyle.weights`
(which converts checkpoints into torchvision's layout), so neither imports the other.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from .errors import InputError

__all__ = ["VGG_CONFIGS", "Arch", "ConvSpec", "conv_specs"]

Arch = Literal["vgg16", "vgg19"]

#: torchvision's configurations "D" (VGG16) and "E" (VGG19): channels of each 3x3 conv, "M" = 2x2 pool.
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}



class ConvSpec(NamedTuple):
    """One 3x3 convolution of a VGG ``features`` stack."""

    name: str  # "conv3_2"
    index: int  # index of the Conv2d in ``features``; its ReLU is at ``index + 1``
    in_channels: int
    out_channels: int
    pools_before: int  # number of 2x2 poolings applied to the input before this conv


def _config(arch: str) -> tuple[int | str, ...]:
    if arch not in VGG_CONFIGS:
        raise InputError(f"unknown architecture {arch!r}; expected one of {', '.join(VGG_CONFIGS)}")
    return VGG_CONFIGS[arch]


def conv_specs(arch: Arch) -> list[ConvSpec]:
    """The convolutions of ``arch`` in order, with torchvision's module indices."""
    specs, index, block, k, channels = [], 0, 1, 1, 3
    for v in _config(arch):
        if v == "M":
            index, block, k = index + 1, block + 1, 1
        else:
            specs.append(ConvSpec(f"conv{block}_{k}", index, channels, int(v), block - 1))
            index, k, channels = index + 2, k + 1, int(v)
    return specs
