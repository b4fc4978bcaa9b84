"""Progress reporting and intermediate saves during the optimisation."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm


class ProgressCallback:
    """A tqdm bar showing the loss terms, and a saver of intermediate images.

    Args:
        total: number of optimisation steps.
        quiet: show nothing.
        save_every: save the working image every N steps (0: never) as ``OUT.stepNNNN.png``.
        output: the final output path, used to name intermediate files.
    """

    def __init__(self, total: int, quiet: bool = False, save_every: int = 0, output: Path | None = None) -> None:
        self.bar = tqdm(total=total, disable=quiet, unit="step", dynamic_ncols=True, leave=False)
        self.save_every = save_every
        self.output = output

    def __enter__(self) -> "ProgressCallback":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def __call__(self, step: int, image: torch.Tensor, terms: dict[str, float]) -> None:
        self.bar.n = min(step, self.bar.total)
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in terms.items()}, refresh=False)
        self.bar.refresh()
        if self.save_every and self.output is not None and step % self.save_every == 0:
            from .io import save_image

            path = self.output.with_name(f"{self.output.stem}.step{step:04d}.png")
            save_image(image.cpu(), path, overwrite=True)
