"""Gradient-based optimisation of the output image.

Adam (the paper's optimiser) or L-BFGS over the pixels of the output, kept in
[0, 1]. The best iterate (lowest total loss) is returned, a NaN or infinite loss
stops with a clear error, and Ctrl-C returns the best result so far. A
:class:`Checkpoint` taken every few steps, or on Ctrl-C, lets a later run continue.
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
class Checkpoint:
    """Where an optimisation stands: enough to continue it. Tensors live on the CPU.

    Attributes:
        step: steps done.
        image: the current iterate ``(1, 3, H, W)`` in [0, 1].
        best_image: the best iterate so far, same shape.
        best_terms: its loss terms.
        optimiser: Adam's state (``step``, ``exp_avg``, ``exp_avg_sq``); empty for L-BFGS, which restarts.
        level: coarse-to-fine level it belongs to (set by the pipeline).
    """

    step: int
    image: torch.Tensor
    best_image: torch.Tensor
    best_terms: dict[str, float]
    optimiser: dict[str, torch.Tensor] = field(default_factory=dict)
    level: int = 0


@dataclass
class OptimisationResult:
    """Outcome of :func:`optimise`.

    Attributes:
        image: best iterate ``(1, 3, H, W)`` in [0, 1].
        terms: loss terms of the best iterate.
        history: loss terms of every step run in this call.
        steps: steps done, those of a resumed checkpoint included.
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
    *,
    resume: Checkpoint | None = None,
    checkpoint: Callable[[Checkpoint], None] | None = None,
    checkpoint_every: int = 0,
) -> OptimisationResult:
    """Minimise ``objective(image)["total"]`` over the pixels of ``image``.

    Args:
        objective: see :data:`Objective`.
        init: start point ``(1, 3, H, W)`` in [0, 1].
        iterations: number of Adam steps, or L-BFGS function evaluations.
        optimizer: ``"adam"`` (the paper's) or ``"lbfgs"``.
        lr: learning rate in units of [0, 1] pixel values (Adam); L-BFGS uses line search.
        callback: see :data:`Callback`.
        resume: continue from this checkpoint (its image replaces ``init``) up to ``iterations``.
        checkpoint: receives a :class:`Checkpoint` every ``checkpoint_every`` steps (0: never)
            and when the run is interrupted.
        checkpoint_every: see ``checkpoint``.

    Returns:
        :class:`OptimisationResult` with the best iterate.

    Raises:
        OptimisationError: the loss became NaN or infinite.
    """
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"expected optimizer 'adam' or 'lbfgs' but received {optimizer!r}")
    if iterations < 0:
        raise ValueError(f"expected iterations >= 0 but received {iterations}")
    if resume is not None and resume.image.shape != init.shape:
        raise ValueError(f"expected a checkpoint of shape {tuple(init.shape)} but received {tuple(resume.image.shape)}")
    start = init if resume is None else resume.image.to(init)
    image = start.detach().clone().clamp_(0, 1).requires_grad_(True)
    best = OptimisationResult(image=image.detach().clone(), terms={"total": math.inf})
    if resume is not None:
        best.image, best.terms = resume.best_image.to(init), dict(resume.best_terms)
    done = 0 if resume is None else resume.step
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
    if resume is not None and resume.optimiser and optimizer == "adam":
        opt.load_state_dict({"state": {0: dict(resume.optimiser)}, "param_groups": opt.state_dict()["param_groups"]})

    def snapshot() -> Checkpoint:
        moments = opt.state_dict()["state"].get(0, {}) if optimizer == "adam" else {}
        return Checkpoint(
            step=done + len(history),
            image=image.detach().clamp(0, 1).cpu(),
            best_image=best.image.cpu(),
            best_terms=dict(best.terms),
            optimiser={k: v.detach().cpu().clone() for k, v in moments.items()},
        )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        total = evaluate()
        total.backward()
        return total

    try:
        while done + len(history) < iterations:
            opt.step(closure)
            with torch.no_grad():
                image.clamp_(0, 1)
            step = done + len(history)
            if callback is not None:
                callback(step, image.detach(), history[-1])
            if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                checkpoint(snapshot())
    except KeyboardInterrupt:
        best.interrupted = True
        if checkpoint is not None:
            checkpoint(snapshot())
    best.steps = done + len(history)
    if iterations == 0:  # no step: the start point is scored, so its terms are known
        with torch.no_grad():
            evaluate()
    best.history = history
    return best
