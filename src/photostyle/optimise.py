"""Gradient-based optimisation of the output image.

Adam (the paper's optimiser) or L-BFGS over the pixels of the output, kept in
[0, 1]. The best iterate (lowest total loss) is returned, a NaN or infinite loss
stops with a clear error, and Ctrl-C returns the best result so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from .errors import OptimisationError

Objective = Callable[[torch.Tensor], dict[str, torch.Tensor]]
"""Maps the image ``(1, 3, H, W)`` to named loss terms; the key ``"total"`` is minimised."""

Callback = Callable[[int, torch.Tensor, dict[str, float]], None]
"""Called after each step with the step index (1-based), the current image and the terms."""


@dataclass
class OptimisationResult:
    """Outcome of :func:`optimise`.

    Attributes:
        image: best iterate ``(1, 3, H, W)`` in [0, 1].
        terms: loss terms of the best iterate.
        history: loss terms of every step.
        steps: steps actually run.
        interrupted: whether the user stopped the run early.
    """

    image: torch.Tensor
    terms: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    interrupted: bool = False


def optimise(
    objective: Objective,
    init: torch.Tensor,
    iterations: int,
    optimizer: Literal["adam", "lbfgs"] = "adam",
    lr: float = 0.01,
    callback: Callback | None = None,
) -> OptimisationResult:
    """Minimise ``objective(image)["total"]`` over the pixels of ``image``.

    Args:
        objective: see :data:`Objective`.
        init: start point ``(1, 3, H, W)`` in [0, 1].
        iterations: number of Adam steps, or L-BFGS function evaluations.
        optimizer: ``"adam"`` (the paper's) or ``"lbfgs"``.
        lr: learning rate in units of [0, 1] pixel values (Adam); L-BFGS uses line search.
        callback: see :data:`Callback`.

    Returns:
        :class:`OptimisationResult` with the best iterate.

    Raises:
        OptimisationError: the loss became NaN or infinite.
    """
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"expected optimizer 'adam' or 'lbfgs' but received {optimizer!r}")
    if iterations < 0:
        raise ValueError(f"expected iterations >= 0 but received {iterations}")
    image = init.detach().clone().clamp_(0, 1).requires_grad_(True)
    best = OptimisationResult(image=image.detach().clone(), terms={"total": math.inf})
    history: list[dict[str, float]] = []

    def evaluate() -> torch.Tensor:
        terms = objective(image)
        total = terms["total"]
        if not torch.isfinite(total):
            raise OptimisationError(
                f"the loss became {total.item()} at step {len(history) + 1}; "
                "lower --lr or the loss weights, or use --optimizer adam"
            )
        values = {k: float(v.detach()) for k, v in terms.items()}
        history.append(values)
        if values["total"] < best.terms["total"]:
            best.image, best.terms = image.detach().clone(), values
        return total

    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([image], lr=lr)
    else:
        opt = torch.optim.LBFGS([image], lr=1.0, max_iter=1, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        total = evaluate()
        total.backward()
        return total

    try:
        while len(history) < iterations:
            opt.step(closure)
            with torch.no_grad():
                image.clamp_(0, 1)
            if callback is not None:
                callback(len(history), image.detach(), history[-1])
    except KeyboardInterrupt:
        best.interrupted = True
    if iterations == 0:
        with torch.no_grad():
            evaluate()
    best.history, best.steps = history, len(history)
    return best
