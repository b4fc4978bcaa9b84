"""Resume state of an interrupted transfer, kept next to its output as ``OUT.photostyle-state.pt``.

The file holds a :class:`~photostyle.optimise.Checkpoint`: the current and best working images,
Adam's moments, the step count and the coarse-to-fine level. It is written with ``torch.save`` as
a plain dict of tensors plus one JSON string and read back with ``torch.load(weights_only=True)``,
so opening it cannot run code. A fingerprint of the input files and the settings ties it to one
transfer: a state left by other inputs or settings is ignored with a warning, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import OutputError
from .io import write_atomically
from .optimise import Checkpoint
from .weights import TORCH_LOAD_ERRORS, load_error_reason

__all__ = ["SUFFIX", "StateFile", "fingerprint", "state_path"]

SUFFIX = ".photostyle-state.pt"
_VERSION = 1
# Where it runs does not change what it computes, and a resumed run may go on for more (or fewer) steps.
_IGNORED_SETTINGS = ("device", "iterations", "fine_iterations")


def state_path(output: str | os.PathLike[str]) -> Path:
    """The state file of ``output``: ``OUT.png`` -> ``OUT.png.photostyle-state.pt``."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


def fingerprint(files: Sequence[str | os.PathLike[str] | None], settings: Mapping[str, Any]) -> str:
    """sha256 (hex) of the bytes of ``files`` (``None`` for an absent one) and of ``settings``.

    Args:
        files: the input files in a fixed order (content, style, content mask, style mask).
        settings: JSON-serialisable settings; ``device`` and the step counts are left out.
    """
    digest = hashlib.sha256()
    for path in files:
        if path is None:
            digest.update(b"-\0")
            continue
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    kept = {k: v for k, v in settings.items() if k not in _IGNORED_SETTINGS}
    digest.update(json.dumps(kept, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class StateFile:
    """The resume state of one output.

    Args:
        output: the output image path; the state lives at :func:`state_path` of it.
        fingerprint: of the inputs and settings (see :func:`fingerprint`).
        every: also save every N optimisation steps (0: only when interrupted).

    Attributes:
        start: the checkpoint to continue from, set by :meth:`load`; ``None`` starts afresh.
    """

    def __init__(self, output: str | os.PathLike[str], fingerprint: str, every: int = 0) -> None:
        self.path = state_path(output)
        self.fingerprint = fingerprint
        self.every = every
        self.start: Checkpoint | None = None

    def load(self) -> Checkpoint | None:
        """Read the state if it belongs to these inputs and settings; otherwise warn and return ``None``."""
        if not self.path.is_file():
            warnings.warn(f"{self.path}: no saved state to resume from; starting from the beginning", stacklevel=2)
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            meta = json.loads(data["meta"])
            optimiser = {k.removeprefix("optimiser."): v for k, v in data.items() if k.startswith("optimiser.")}
            checkpoint = Checkpoint(
                step=int(meta["step"]), image=data["image"], best_image=data["best_image"],
                best_terms={k: float(v) for k, v in meta["best_terms"].items()}, optimiser=optimiser,
                level=int(meta["level"]),
            )
            if not all(isinstance(t, torch.Tensor) for t in (checkpoint.image, checkpoint.best_image, *optimiser.values())):
                raise TypeError("expected tensors")
        except (*TORCH_LOAD_ERRORS, TypeError, AttributeError) as err:  # and a dict of the wrong shape
            warnings.warn(f"{self.path}: unreadable saved state ({load_error_reason(err)}); it is ignored", stacklevel=2)
            return None
        if meta.get("version") != _VERSION or meta.get("fingerprint") != self.fingerprint:
            warnings.warn(
                f"{self.path}: the saved state belongs to other input files or settings; it is ignored "
                "(delete it, or resume with the same files and options)",
                stacklevel=2,
            )
            return None
        self.start = checkpoint
        return checkpoint

    def resume_at(self, level: int) -> Checkpoint | None:
        """The loaded checkpoint if it belongs to coarse-to-fine ``level``."""
        return self.start if self.start is not None and self.start.level == level else None

    def save(self, checkpoint: Checkpoint, level: int = 0) -> None:
        """Write ``checkpoint`` (taken at ``level``) atomically; a failed write only warns."""
        meta = {"version": _VERSION, "fingerprint": self.fingerprint, "step": checkpoint.step,
                "level": level, "best_terms": checkpoint.best_terms}
        data = {"image": checkpoint.image, "best_image": checkpoint.best_image, "meta": json.dumps(meta)}
        data.update({f"optimiser.{k}": v for k, v in checkpoint.optimiser.items()})
        try:
            write_atomically(self.path, lambda f: torch.save(data, f))
        except OutputError as err:
            warnings.warn(f"{self.path}: cannot save the resume state ({err}); --resume will start afresh", stacklevel=2)

    def remove(self) -> None:
        """Delete the state (after a finished run)."""
        self.path.unlink(missing_ok=True)
