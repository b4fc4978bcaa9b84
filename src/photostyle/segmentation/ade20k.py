"""ADE20K scene parsing (150 classes) with a Hugging Face transformers model.

The default checkpoint is SegFormer-B0 fine-tuned on ADE20K at 512x512
(``nvidia/segformer-b0-finetuned-ade-512-512``, 3.8 M parameters). Any
``AutoModelForSemanticSegmentation`` checkpoint works, e.g. ``SegformerForSemanticSegmentation``
or ``UperNetForSemanticSegmentation``, given as a hub id (looked up in the Hugging Face cache)
or as a local directory written by ``save_pretrained``. Labels come from the checkpoint's
``config.id2label``; :data:`ADE20K_CLASSES` lists the 150 ADE20K names for reference.

transformers is imported only when a segmenter is built: ``pip install 'photostyle[ade20k]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from photostyle.errors import WeightsError
from photostyle.masks import Segmentation
from photostyle.segmentation.base import Segmenter, check_image, register_segmenter
from photostyle.weights import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ADE20K_CLASSES", "ADE20KSegmenter", "DEFAULT_CHECKPOINT"]

DEFAULT_CHECKPOINT = "nvidia/segformer-b0-finetuned-ade-512-512"

#: The 150 classes of the ADE20K scene-parsing benchmark (objectInfo150), in index order.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building, edifice", "sky", "floor, flooring", "tree", "ceiling", "road, route", "bed",
    "windowpane, window", "grass", "cabinet", "sidewalk, pavement",
    "person, individual, someone, somebody, mortal, soul", "earth, ground", "door, double door", "table",
    "mountain, mount", "plant, flora, plant life", "curtain, drape, drapery, mantle, pall", "chair",
    "car, auto, automobile, machine, motorcar", "water", "painting, picture", "sofa, couch, lounge", "shelf",
    "house", "sea", "mirror", "rug, carpet, carpeting", "field", "armchair", "seat", "fence, fencing", "desk",
    "rock, stone", "wardrobe, closet, press", "lamp", "bathtub, bathing tub, bath, tub", "railing, rail",
    "cushion", "base, pedestal, stand", "box", "column, pillar", "signboard, sign",
    "chest of drawers, chest, bureau, dresser", "counter", "sand", "sink", "skyscraper",
    "fireplace, hearth, open fireplace", "refrigerator, icebox", "grandstand, covered stand", "path",
    "stairs, steps", "runway", "case, display case, showcase, vitrine",
    "pool table, billiard table, snooker table", "pillow", "screen door, screen", "stairway, staircase",
    "river", "bridge, span", "bookcase", "blind, screen", "coffee table, cocktail table",
    "toilet, can, commode, crapper, pot, potty, stool, throne", "flower", "book", "hill", "bench",
    "countertop", "stove, kitchen stove, range, kitchen range, cooking stove", "palm, palm tree",
    "kitchen island",
    "computer, computing machine, computing device, data processor, electronic computer, "
    "information processing system",
    "swivel chair", "boat", "bar", "arcade machine", "hovel, hut, hutch, shack, shanty",
    "bus, autobus, coach, charabanc, double-decker, jitney, motorbus, motorcoach, omnibus, passenger vehicle",
    "towel", "light, light source", "truck, motortruck", "tower", "chandelier, pendant, pendent",
    "awning, sunshade, sunblind", "streetlight, street lamp", "booth, cubicle, stall, kiosk",
    "television receiver, television, television set, tv, tv set, idiot box, boob tube, telly, goggle box",
    "airplane, aeroplane, plane", "dirt track", "apparel, wearing apparel, dress, clothes", "pole",
    "land, ground, soil", "bannister, banister, balustrade, balusters, handrail",
    "escalator, moving staircase, moving stairway", "ottoman, pouf, pouffe, puff, hassock", "bottle",
    "buffet, counter, sideboard", "poster, posting, placard, notice, bill, card", "stage", "van", "ship",
    "fountain", "conveyer belt, conveyor belt, conveyer, conveyor, transporter", "canopy",
    "washer, automatic washer, washing machine", "plaything, toy", "swimming pool, swimming bath, natatorium",
    "stool", "barrel, cask", "basket, handbasket", "waterfall, falls", "tent, collapsible shelter", "bag",
    "minibike, motorbike", "cradle", "oven", "ball", "food, solid food", "step, stair", "tank, storage tank",
    "trade name, brand name, brand, marque", "microwave, microwave oven", "pot, flowerpot",
    "animal, animate being, beast, brute, creature, fauna", "bicycle, bike, wheel, cycle", "lake",
    "dishwasher, dish washer, dishwashing machine", "screen, silver screen, projection screen",
    "blanket, cover", "sculpture", "hood, exhaust hood", "sconce", "vase",
    "traffic light, traffic signal, stoplight", "tray",
    "ashcan, trash can, garbage can, wastebin, ash bin, ash-bin, ashbin, dustbin, trash barrel, trash bin",
    "fan", "pier, wharf, wharfage, dock", "crt screen", "plate", "monitor, monitoring device",
    "bulletin board, notice board", "shower", "radiator", "glass, drinking glass", "clock", "flag",
)

_INSTALL = "pip install 'photostyle[ade20k]'"


def _local_checkpoint(checkpoint: str) -> str | None:
    """``checkpoint``'s directory on disk: itself, or its snapshot in the Hugging Face cache; ``None`` if neither.

    Loading from a directory never opens a socket, whereas some transformers versions still ask the
    hub about a cached hub id (``adapter_config.json``) with ``local_files_only=True``.
    """
    if Path(checkpoint).expanduser().is_dir():
        return str(Path(checkpoint).expanduser())
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(checkpoint, "config.json")
    except ValueError:  # not a valid hub id
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def _load_model(checkpoint: str, local_files_only: bool) -> Any:
    try:
        from transformers import AutoModelForSemanticSegmentation
    except ImportError as err:
        raise WeightsError(f"the ade20k segmenter needs transformers; install it with: {_INSTALL}") from err
    if local_files_only:
        local = _local_checkpoint(checkpoint)
        if local is None:
            raise WeightsError(
                f"the ADE20K segmentation model {checkpoint!r} is not on this machine; fetch it once with "
                f"'photostyle weights --fetch ade20k' (or the checkpoint you want), or pass "
                f"checkpoint=/path/to/a/save_pretrained/directory"
            )
        checkpoint = local
    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(checkpoint, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        raise WeightsError(
            f"cannot load the ADE20K segmentation model {checkpoint!r} ({str(err).splitlines()[0]}); "
            f"fetch it once with 'photostyle weights --fetch ade20k' "
            f"(or the checkpoint you want), or pass checkpoint=/path/to/a/save_pretrained/directory"
        ) from err
    return model.eval()


def _upsampled_argmax(logits: torch.Tensor, size: tuple[int, int], budget_bytes: int = 2**28) -> torch.Tensor:
    """Class index ``(1, H, W)`` of bilinearly upsampled ``logits`` ``(1, C, h, w)``, a few classes at a time."""
    step = max(1, budget_bytes // (4 * size[0] * size[1]))
    best = index = None
    for start in range(0, logits.shape[1], step):
        chunk = logits[:, start : start + step].float().contiguous(memory_format=torch.channels_last)
        up = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False)  # channels last: fast max
        value, arg = up.max(dim=1)
        if best is None:
            best, index = value, arg + start
        else:
            better = value > best
            best = torch.where(better, value, best)
            index = torch.where(better, arg + start, index)
    return index


@register_segmenter("ade20k")
class ADE20KSegmenter(Segmenter):
    """Semantic segmentation into ADE20K's 150 classes with a transformers model.

    Args:
        checkpoint: hub id or local ``save_pretrained`` directory of an
            ``AutoModelForSemanticSegmentation`` model (SegFormer, UperNet, ...).
        local_files_only: only use the Hugging Face cache or a local directory, never the network
            (the default: a run stays offline; ``photostyle weights --fetch ade20k`` downloads).
        size: the photo is resized to ``size x size`` for the model (SegFormer's ADE20K
            preprocessing); the logits are upsampled back to the photo's size.

    Attributes:
        class_names: the model's class names by class id (``config.id2label``, stripped).

    Raises:
        WeightsError: transformers is not installed or the checkpoint cannot be loaded.

    Example:
        >>> seg = ADE20KSegmenter().segment(image)  # doctest: +SKIP
        >>> seg.labels  # doctest: +SKIP
        ['wall', 'sky', 'tree']
    """

    labelled = True

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] = DEFAULT_CHECKPOINT,
        *,
        local_files_only: bool = True,
        size: int = 512,
    ) -> None:
        self.checkpoint = os.fspath(checkpoint)
        self.size = size
        self.model = _load_model(self.checkpoint, local_files_only)
        id2label = {int(k): str(v).strip() for k, v in self.model.config.id2label.items()}
        self.class_names: list[str] = [id2label[i] for i in range(len(id2label))]

    @torch.no_grad()
    def segment(self, image: torch.Tensor) -> Segmentation:
        """Label every pixel with its most likely ADE20K class.

        Args:
            image: ``(1, 3, H, W)`` float RGB in [0, 1].

        Returns:
            Hard masks ``(1, K, H, W)`` in {0, 1} that partition the image, one per class present,
            in class-index order; classes sharing a name share a mask.
        """
        check_image(image)
        height, width = image.shape[-2:]
        self.model.to(image.device)
        x = F.interpolate(image.float(), size=(self.size, self.size), mode="bilinear",
                          align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        logits = self.model(pixel_values=(x - mean) / std).logits
        classes = _upsampled_argmax(logits, (height, width))
        present = torch.unique(classes).tolist()
        names = list(dict.fromkeys(self.class_names[c] for c in present))
        lookup = torch.zeros(len(self.class_names), dtype=torch.long, device=image.device)
        lookup[present] = torch.tensor([names.index(self.class_names[c]) for c in present], device=image.device)
        masks = torch.zeros(1, len(names), height, width, device=image.device)
        masks.scatter_(1, lookup[classes].unsqueeze(1), 1.0)
        return Segmentation(masks=masks, labels=names)
