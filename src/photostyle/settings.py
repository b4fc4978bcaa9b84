"""Every setting of a transfer, once: typed, documented, validated, with the presets.

:class:`TransferConfig` is the one source of truth. Each field carries its meaning, its bounds
or choices and its command-line flag in its metadata (:class:`Setting`); the command line, the
web page and the benchmark are built from it, and a config with a value out of range cannot be
made (:class:`~photostyle.errors.InputError` naming the field, its flag and the range). This
module imports no torch, so ``photostyle --help`` answers at once.

>>> TransferConfig().size, from_preset("fast").size
(700, 224)
>>> TransferConfig(detail=7)
Traceback (most recent call last):
    ...
photostyle.errors.InputError: detail (--detail) must be a number in [0, 1] but received 7
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from .errors import InputError

__all__ = ["CHOICES", "PRESETS", "STYLE_LAYERS", "Setting", "TransferConfig", "from_preset", "level_sizes",
           "setting_of"]

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
#: Names a field may take; ``tests/test_settings.py`` checks they agree with the library's registries.
#: Segmenters are not listed: their registry is open to plugins and is checked when one is built.
CHOICES = {
    "critic": ("auto", "nima", "brisque", "niqe", "none"),
    "similarity_metric": ("path", "wup", "lin", "res", "jcn", "li", "wpath"),
}


@dataclass(frozen=True)
class Setting:
    """What a field means and which values it takes.

    Attributes:
        help: one line for ``--help`` and the docs.
        kind: ``int``, ``float``, ``str`` or ``tuple`` (the type of a value given on the command line or in JSON).
        minimum, maximum: inclusive bounds of a number (``None``: unbounded).
        above: the number must be strictly greater than ``minimum``.
        choices: the values a string may take.
        flags: command-line flags; empty for settings of the Python API only.
        optional: ``None`` is allowed.
    """

    help: str
    kind: type = str
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    choices: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    optional: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`InputError` unless ``value`` is a valid value of the field ``name``."""
        if value is None and self.optional:
            return
        if not self._valid(value):
            flag = f" ({self.flags[0]})" if self.flags else ""
            raise InputError(f"{name}{flag} must be {self.describe()} but received {value!r}")

    def _valid(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.kind is str:
            return isinstance(value, str)
        if self.kind is tuple:
            return isinstance(value, tuple) and len(value) > 0 and all(isinstance(v, str) for v in value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind is int and not isinstance(value, int)):
            return False
        if not math.isfinite(value):
            return False
        low_ok = self.minimum is None or value > self.minimum or (value == self.minimum and not self.above)
        return low_ok and (self.maximum is None or value <= self.maximum)

    def describe(self) -> str:
        """The valid values in words: ``"a number in [0, 1]"``, ``"one of adam, lbfgs"``."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.kind is str:
            return "a string"
        if self.kind is tuple:
            return "a non-empty tuple of strings"
        what = "an integer" if self.kind is int else "a number"
        low, high = (None if v is None else f"{int(v)}" if float(v).is_integer() else f"{v:g}"
                     for v in (self.minimum, self.maximum))
        if low is not None and high is not None:
            return f"{what} in {'(' if self.above else '['}{low}, {high}]"
        if low is not None:
            return f"{what} {'>' if self.above else '>='} {low}"
        return what


def _setting(default: Any, help: str, *flags: str, **limits: Any) -> Any:
    """A dataclass field with its :class:`Setting` in the metadata."""
    kind = limits.pop("kind", type(default) if default is not None else int)
    meta = Setting(help=help, kind=kind, flags=flags, **limits)
    return field(default=default, metadata={"setting": meta})


@dataclass
class TransferConfig:
    """Every setting of a transfer; the defaults are the ones the benchmark reports (preset ``balanced``).

    Sizes are long sides in pixels. Weights multiply size-independent terms (relative feature and
    Gram errors, Laplacian energy per pixel). Every field is checked when the config is made (and by
    :func:`dataclasses.replace`).

    Raises:
        InputError: a value out of range, naming the field, its flag and the valid values.
    """

    size: int = _setting(700, "working resolution, long side in px, never above the content photo's; a photo "
                         "squarer than 4:3 works at a 4:3 frame's pixel count (a square one at 0.87x)", "--size",
                         minimum=32)
    output_size: int | None = _setting(None, "output long side in px, never above the content photo's (default: "
                                       "the content's own size)", "--output-size", minimum=16, optional=True)
    iterations: int = _setting(60, "optimisation steps at the first (coarsest) level", "--iterations", minimum=0)
    fine_iterations: int | None = _setting(None, "optimisation steps at each finer level, which starts from the "
                                           "coarser result (default: half of --iterations)", "--fine-iterations",
                                           minimum=0, optional=True)
    levels: int = _setting(2, "coarse-to-fine levels, each half the size of the next", "--levels", minimum=1, maximum=6)
    optimizer: str = _setting("adam", "optimiser; Adam is the paper's", "--optimizer", choices=("adam", "lbfgs"))
    lr: float = _setting(0.01, "Adam learning rate, in pixel units", "--lr", minimum=0.0, maximum=1.0, above=True)
    init: str = _setting("distribution", "start point; distribution/reinhard = per-segment colour transfer",
                         "--init", choices=("distribution", "reinhard", "content", "noise", "style"))
    content_weight: float = _setting(1.0, "weight of the content term (conv4_2)", "--content-weight", minimum=0.0)
    style_weight: float = _setting(5.0, "weight of the segment-wise Gram style term", "--style-weight", minimum=0.0)
    photo_weight: float = _setting(300.0, "weight of the Matting-Laplacian photorealism term", "--photo-weight",
                                   minimum=0.0)
    content_layer: str = _setting("conv4_2", "VGG layer of the content term")
    style_layers: tuple[str, ...] = _setting(STYLE_LAYERS, "VGG layers of the style term", kind=tuple)
    arch: str = _setting("vgg16", "feature network", "--arch", choices=("vgg16", "vgg19"))
    weights: str | None = _setting("default", "'default' (registry), a path to a torchvision-layout state dict, "
                                   "or None for random (tests)", "--weights", optional=True)
    pooling: str = _setting("max", "pooling of the feature network", choices=("max", "avg"))
    affine_radius: int = _setting(2, "window radius in px of the local affine output at working size", minimum=1)
    affine_eps: float = _setting(1e-4, "ridge of the local affine fit", minimum=0.0, above=True)
    detail: float = _setting(0.75, "share of the texture the optimisation adds that is kept in the output, in lightness "
                             "only; 0 = a pure local affine recolouring of the content (most photorealistic)", "--detail",
                             minimum=0.0, maximum=1.0)
    flat_threshold: float = _setting(0.03, "grey-level standard deviation below which a region counts as flat: there "
                                     "no painted texture is kept and the colour maps are fitted over wide windows; "
                                     "0 = every region is textured", "--flat-threshold", minimum=0.0, maximum=1.0)
    texture: float = _setting(0.5, "how far each segment's fine-scale contrast moves towards the style photo's: the "
                              "photo's own detail made crisper or softer, never new texture; 0 = off",
                              "--texture", minimum=0.0, maximum=1.0)
    strength: float = _setting(1.0, "share of the change applied, in lightness and colour; 0 returns the content",
                               "--strength", minimum=0.0, maximum=1.0)
    chroma: float = _setting(1.0, "share of the colour (a*b*) change applied, on top of --strength; below 1 keeps "
                             "some of the content's own colours", "--chroma", minimum=0.0, maximum=1.0)
    critic: str = _setting("none", "aesthetic term: NIMA (needs weights), the offline BRISQUE/NIQE, auto = NIMA "
                           "else NIQE", "--quality-critic", choices=CHOICES["critic"])
    critic_weight: float = _setting(0.05, "weight of the aesthetic term", "--critic-weight", "--nima-weight",
                                    minimum=0.0)
    segmentation: str = _setting("auto", "where segments come from: masks (--content-mask/--style-mask), auto "
                                 "(ADE20K if its weights are present, else region matching) or none (one global "
                                 "style)", "--segmentation", choices=("auto", "masks", "none"))
    segmenter: str = _setting("auto", "automatic segmenter: auto (ADE20K if available locally, else region matching), "
                              "or a registered name (ade20k, regmatch, coseg)", "--segmenter")
    similarity_metric: str = _setting("li", "WordNet metric for grouping labels", "--similarity-metric",
                                      choices=CHOICES["similarity_metric"])
    semantic_threshold: float = _setting(0.8, "labels at least this similar are merged", "--semantic-threshold",
                                         minimum=0.0)
    min_segment: float = _setting(0.01, "segments smaller than this share of either photo join a neighbour",
                                  "--min-segment", "--min-fraction", minimum=0.0, maximum=0.5)
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N", "--device")
    precision: str = _setting("auto", "arithmetic of the feature network: auto = bf16 autocast and channels-last "
                              "memory on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX), fp32 elsewhere; "
                              "losses are always summed in fp32", "--precision",
                              choices=("auto", "fp32", "bf16"))
    seed: int = _setting(0, "random seed", "--seed", minimum=0, maximum=2**32 - 1)

    @property
    def level_steps(self) -> tuple[int, ...]:
        """Optimisation steps at each coarse-to-fine level, coarsest first."""
        fine = round(self.iterations / 2) if self.fine_iterations is None else self.fine_iterations
        return (self.iterations,) + (fine,) * (self.levels - 1)

    @property
    def total_steps(self) -> int:
        """Optimisation steps of the whole run, every level: what progress bars count to."""
        return sum(self.level_steps)

    @property
    def vgg16_weights(self) -> str | None:
        """The VGG16 weights of the segmenters built on VGG16 features: ``weights`` when the
        transfer's network is VGG16 too, else the registry's."""
        return self.weights if self.arch == "vgg16" else "default"

    def __post_init__(self) -> None:
        if isinstance(self.style_layers, list):  # as JSON gives it back
            self.style_layers = tuple(self.style_layers)
        for f in fields(self):
            setting_of(f).check(f.name, getattr(self, f.name))


def setting_of(f: Field | str) -> Setting:
    """The :class:`Setting` of a field of :class:`TransferConfig`, given as a field or by name."""
    if isinstance(f, str):
        f = TransferConfig.__dataclass_fields__[f]
    return f.metadata["setting"]


#: Speed/quality presets: the working size, the steps per level, the coarse-to-fine levels, the learning
#: rate and the photorealism weight. ``balanced`` is :class:`TransferConfig`'s own default: 60 steps at
#: 350 px, then 30 (half, the finer levels' default) at 700 px starting from that result. 700 px is a
#: DPST photo's own size: the style's texture and light are painted at the scale the photo is seen at
#: (45 DPST pairs, hand masks, scored at their own size: Gram distance 0.421 against 0.491 for the
#: earlier 224 -> 448 px with lr 0.02, and DPST's 0.502). At 700 px Adam's step of 0.02 first raises
#: the loss, and on some photos no later step gets below the carried-over start; 0.01 does. Larger
#: photos work at 700 px and are carried to their own size by the local affine output. A larger
#: working size keeps less of the photo's local structure at the same photorealism weight, hence 300
#: rather than ``fast``'s 100. ``best`` adds 15 steps at 700 px and raises the photorealism weight to
#: 450. ``docs/benchmark.md`` has the figures.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": dict(size=224, iterations=30, levels=1, lr=0.02, photo_weight=100.0),
    "balanced": dict(size=700, iterations=60, levels=2, lr=0.01, photo_weight=300.0),
    "best": dict(size=700, iterations=60, fine_iterations=45, levels=2, lr=0.01, photo_weight=450.0),
}


def from_preset(name: str, **overrides: Any) -> TransferConfig:
    """The :class:`TransferConfig` of preset ``name``, with ``overrides`` applied on top.

    >>> from_preset("fast").size, from_preset("fast", iterations=2).iterations
    (224, 2)

    Raises:
        InputError: ``name`` is not a preset (the message lists them), or an override is out of range.
        TypeError: an override is not a field of :class:`TransferConfig`.
    """
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(TransferConfig(), **{**PRESETS[name], **overrides})


def level_sizes(size: int, levels: int) -> list[int]:
    """Working long sides of the coarse-to-fine pyramid, coarsest first, each half the next."""
    if levels < 1:
        raise ValueError(f"expected levels >= 1 but received {levels}")
    return [max(32, round(size / 2 ** (levels - 1 - i))) for i in range(levels)]
