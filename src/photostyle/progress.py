"""Progress reporting and intermediate saves during the optimisation."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from .errors import OutputError


class ProgressCallback:
    """A tqdm bar showing the loss terms, and a saver of intermediate images.

    The bar appears at the first step, so a run refused before any work prints only its error.
    An intermediate image never replaces a file unless ``overwrite`` says so: check
    :meth:`existing_files` before the run; one that appears during it is skipped with a warning.

    Args:
        total: number of optimisation steps.
        quiet: show nothing.
        save_every: save the working image every N steps (0: never) as ``OUT.stepNNNN.png``.
        output: the final output path, used to name intermediate files.
        overwrite: whether an existing intermediate image may be replaced.
    """

    def __init__(self, total: int, quiet: bool = False, save_every: int = 0, output: Path | None = None,
                 overwrite: bool = False) -> None:
        self.total, self.quiet = total, quiet
        self.save_every = save_every
        self.output = output
        self.overwrite = overwrite
        self.bar: tqdm | None = None

    def __enter__(self) -> "ProgressCallback":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def step_path(self, step: int) -> Path:
        """The intermediate image of ``step``: ``OUT.png`` -> ``OUT.step0020.png``."""
        assert self.output is not None
        return self.output.with_name(f"{self.output.stem}.step{step:04d}.png")

    def existing_files(self) -> list[Path]:
        """The files already there that a run from step 0 would save intermediate images to."""
        if not self.save_every or self.output is None:
            return []
        steps = range(self.save_every, self.total + 1, self.save_every)
        return [path for path in map(self.step_path, steps) if path.exists()]

    def __call__(self, step: int, image: torch.Tensor, terms: dict[str, float]) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, disable=self.quiet, unit="step", dynamic_ncols=True, leave=False)
        self.bar.n = min(step, self.bar.total)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in terms.items()}, refresh=False)
        self.bar.refresh()
        if self.save_every and self.output is not None and step % self.save_every == 0:
            from .io import save_image

            try:
                save_image(image.cpu(), self.step_path(step), overwrite=self.overwrite)
            except OutputError as err:
                warnings.warn(f"intermediate image not saved: {err}", stacklevel=2)
