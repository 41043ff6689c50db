"""Network dreams (the network-dreams notebook): optimise the *input* of a frozen classifier until it predicts a chosen class.

Starting from seeded Gaussian noise, a batch of images is trained with Adam/SGD so that the network
assigns each image its target: a class id (cross-entropy) or a soft distribution over classes ("hybrids",
KL(target ‖ softmax)). An optional ``lambda_l2 * x.pow(2).mean()`` penalty (the notebook's task 3) trades
confidence for smoother, darker images.

Differences from the notebook, on purpose:
- our backbones take pixels in [0, 1] (no MNIST normalisation), so the default clamp is (0, 1) instead of
  the notebook's (-1, 1) in normalised space; the initial noise is clamped too so the model only ever sees
  valid inputs;
- the noise comes from a local ``torch.Generator``: the same seed gives the same dream regardless of the
  global RNG state, and a sweep/comparison can start every run from the very same batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "DreamResult",
    "DEFAULT_L2_VALUES",
    "initial_noise",
    "dream",
    "l2_sweep",
    "hybrid_targets",
    "parse_hybrid",
    "compare_dreams",
]

DEFAULT_L2_VALUES: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)  # the notebook's exponential progression


@dataclass
class DreamResult:
    """The outcome of one :func:`dream` run. ``T`` is the number of recorded states.

    Attributes:
        images: final images ``[N,1,28,28]`` (float32, CPU).
        frames: recorded images ``[T,N,1,28,28]`` (float16 to save memory); ``frames[0]`` is the start
            and ``frames[-1]`` the final state.
        confidence: ``[T,N]`` probability of the target class; for soft targets, the probability mass on the
            target's classes (see ``probs`` for each class).
        probs: ``[T,N,C]`` full softmax at every recorded state.
        loss: ``[T]`` total loss (task + L2 penalty) at every recorded state.
        steps: ``[T]`` optimisation step of every recorded state (0 = the initial noise).
        targets: the targets, ``[N]`` long or ``[N,C]`` float.
        lambda_l2: the L2 penalty coefficient used.
    """

    images: Tensor
    frames: Tensor
    confidence: Tensor
    probs: Tensor
    loss: Tensor
    steps: Tensor
    targets: Tensor
    lambda_l2: float = 0.0

    @property
    def soft(self) -> bool:
        """True when the targets are distributions (hybrid dreams) rather than class ids."""
        return self.targets.dim() == 2

    @property
    def final_confidence(self) -> Tensor:
        """``[N]`` target confidence of the final images."""
        return self.confidence[-1]


def initial_noise(
    n: int,
    seed: int = 0,
    init_mean: float = 0.5,
    init_std: float = 1.0,
    clamp: tuple[float | None, float | None] | None = (0.0, 1.0),
    shape: tuple[int, ...] = (1, 28, 28),
) -> Tensor:
    """The seeded starting batch ``[n, *shape]``: ``init_mean + init_std * N(0, 1)``, clamped like the dream."""
    gen = torch.Generator().manual_seed(seed)  # local generator: independent of (and harmless to) the global RNG
    x = init_mean + init_std * torch.randn((n, *shape), generator=gen)
    return x.clamp(*clamp) if clamp is not None else x


def _validate_targets(targets: Tensor, num_classes: int) -> Tensor:
    if targets.dim() == 1:
        if targets.dtype.is_floating_point:
            raise ValueError("class-id targets must be an integer tensor [N]; soft targets are float [N, C]")
        bad = (targets < 0) | (targets >= num_classes)
        if bad.any():
            raise ValueError(
                f"targets {targets[bad].tolist()} are out of range for a model with {num_classes} classes "
                f"(valid: 0..{num_classes - 1})"
            )
        return targets.long()
    if targets.dim() == 2:
        if targets.shape[1] != num_classes:
            raise ValueError(f"soft targets have {targets.shape[1]} classes but the model outputs {num_classes}")
        if (targets < 0).any() or not torch.allclose(targets.sum(1), torch.ones(len(targets)), atol=1e-4):
            raise ValueError("soft targets must be non-negative rows summing to 1 (use hybrid_targets to build them)")
        return targets.float()
    raise ValueError(f"targets must be [N] class ids or [N, C] distributions, got shape {tuple(targets.shape)}")


def _confidence(probs: Tensor, targets: Tensor) -> Tensor:
    if targets.dim() == 1:
        return probs.gather(1, targets[:, None]).squeeze(1)
    return (probs * (targets > 0)).sum(1)  # mass on the hybrid's classes


def dream(
    model: nn.Module,
    targets: Tensor,
    steps: int = 200,
    lr: float = 0.1,
    optimizer: str = "adam",
    clamp: tuple[float | None, float | None] | None = (0.0, 1.0),
    lambda_l2: float = 0.0,
    init_std: float = 1.0,
    init_mean: float = 0.5,
    seed: int = 0,
    record_every: int = 1,
    init: Tensor | None = None,
) -> DreamResult:
    """Optimise a batch of inputs so that the frozen ``model`` predicts ``targets``.

    Args:
        model: a classifier mapping ``[B,1,28,28]`` pixels in [0, 1] to ``[B,C]`` logits. It is put in eval
            mode and its parameters get ``requires_grad=False`` for the call; both are restored afterwards and
            its weights are never modified.
        targets: ``[N]`` long class ids (cross-entropy) or ``[N,C]`` float distributions (KL(target ‖ softmax),
            for hybrids; see :func:`hybrid_targets`).
        steps: optimisation steps.
        lr: learning rate of the input optimiser.
        optimizer: ``"adam"`` (scale-free, the notebook's choice) or ``"sgd"``. Both losses are batch means as in the
            seed, so with SGD the per-image step shrinks with the batch size; Adam is unaffected.
        clamp: ``(min, max)`` pixel range enforced after every step (and on the initial noise); ``None`` = no clamp.
            The default (0, 1) is the valid pixel range of our backbones (the seed used (-1, 1) in normalised space).
        lambda_l2: weight of the ``x.pow(2).mean()`` penalty added to the task loss (pulls pixels to 0 = background).
        init_std, init_mean: the starting noise is ``init_mean + init_std * N(0, 1)``.
        seed: seed of the starting noise (a local generator: same seed → same images).
        record_every: record a frame/confidence every this many steps (the start and the end are always recorded).
        init: an explicit starting batch ``[N,1,28,28]`` (overrides the noise; used by sweeps and comparisons).
    """
    if steps < 0 or record_every < 1:
        raise ValueError(f"need steps >= 0 and record_every >= 1, got steps={steps}, record_every={record_every}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    n = len(targets)
    x0 = init if init is not None else initial_noise(n, seed, init_mean, init_std, clamp)
    if len(x0) != n:
        raise ValueError(f"init has {len(x0)} images for {n} targets")

    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    frames, probs_hist, losses, rec_steps = [], [], [], []
    try:
        model.eval()  # dropout off: the dream must fool the deployed network, not a noisy one
        for p, _ in flags:
            p.requires_grad_(False)  # frozen: no grads accumulate in the model, only the input moves
        # Callers may sit inside no_grad/inference_mode (e.g. a validation hook); the dream needs autograd.
        with torch.inference_mode(False), torch.enable_grad():
            with torch.no_grad():
                num_classes = model(x0[:1].to(device)).shape[-1]
            tgt = _validate_targets(targets.detach().cpu(), num_classes).to(device)
            x = x0.detach().clone().float().to(device).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr) if optimizer == "adam" else torch.optim.SGD([x], lr=lr)

            def objective() -> tuple[Tensor, Tensor]:
                logits = model(x)
                log_probs = F.log_softmax(logits.float(), dim=1)
                if tgt.dim() == 1:
                    task = F.nll_loss(log_probs, tgt)
                else:
                    task = F.kl_div(log_probs, tgt, reduction="batchmean")
                return task + lambda_l2 * x.pow(2).mean(), log_probs

            def record(step: int, loss: Tensor, log_probs: Tensor) -> None:
                frames.append(x.detach().to("cpu", torch.float16))
                probs_hist.append(log_probs.detach().exp().cpu())
                losses.append(float(loss.detach()))
                rec_steps.append(step)

            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                loss, log_probs = objective()
                if step % record_every == 0:
                    record(step, loss, log_probs)  # the state *before* this update, so frames[0] is the start
                loss.backward()
                opt.step()
                if clamp is not None:
                    with torch.no_grad():
                        x.clamp_(*clamp)
            with torch.no_grad():
                loss, log_probs = objective()
            record(steps, loss, log_probs)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)

    probs = torch.stack(probs_hist)
    tgt_cpu = tgt.cpu()
    conf = torch.stack([_confidence(p, tgt_cpu) for p in probs])
    return DreamResult(
        images=x.detach().float().cpu(),
        frames=torch.stack(frames),
        confidence=conf,
        probs=probs,
        loss=torch.tensor(losses),
        steps=torch.tensor(rec_steps),
        targets=tgt_cpu,
        lambda_l2=float(lambda_l2),
    )


def l2_sweep(
    model: nn.Module,
    targets: Tensor,
    lambdas: Sequence[float] = DEFAULT_L2_VALUES,
    seed: int = 0,
    init_mean: float = 0.5,
    init_std: float = 1.0,
    clamp: tuple[float | None, float | None] | None = (0.0, 1.0),
    **dream_kwargs,
) -> dict[float, DreamResult]:
    """One dream per L2 coefficient, all from the same initial noise (as the notebook's single ``initial_dream``),
    so differences between results come from the penalty alone. Extra kwargs go to :func:`dream`."""
    x0 = initial_noise(len(targets), seed, init_mean, init_std, clamp)
    return {
        float(lam): dream(model, targets, lambda_l2=float(lam), clamp=clamp, init=x0, **dream_kwargs) for lam in lambdas
    }


def parse_hybrid(spec: str | Sequence | Mapping) -> dict[int, float]:
    """One hybrid spec → ``{class: weight}``.

    Accepted: ``"3:0.5,5:0.5"``; ``"3,5"`` (equal split); ``(3, 5)`` (equal split); ``[(3, 0.7), (5, 0.3)]``;
    ``{3: 0.7, 5: 0.3}``.
    """
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts:
            raise ValueError(f"empty hybrid spec {spec!r}; expected e.g. '3:0.5,5:0.5'")
        try:
            if all(":" in p for p in parts):
                items = [(int(c), float(w)) for c, w in (p.split(":", 1) for p in parts)]
            elif not any(":" in p for p in parts):
                items = [(int(p), 1.0 / len(parts)) for p in parts]
            else:
                raise ValueError("give a weight for every class or for none")
        except ValueError as e:
            raise ValueError(f"bad hybrid spec {spec!r} ({e}); expected e.g. '3:0.5,5:0.5' or '3,5'") from None
    elif isinstance(spec, Iterable):
        entries = list(spec)
        if entries and all(isinstance(e, (int, torch.Tensor)) and not isinstance(e, bool) for e in entries):
            items = [(int(c), 1.0 / len(entries)) for c in entries]
        else:
            items = [(int(c), float(w)) for c, w in entries]
    else:
        raise ValueError(f"cannot read hybrid spec {spec!r}; expected e.g. '3:0.5,5:0.5' or (3, 5)")
    weights: dict[int, float] = {}
    for c, w in items:
        if c in weights:
            raise ValueError(f"class {c} appears twice in hybrid spec {spec!r}")
        weights[c] = w
    return weights


def hybrid_targets(pairs: Sequence, num_classes: int = 10) -> Tensor:
    """Soft targets ``[N, num_classes]`` for hybrid dreams, one row per spec (see :func:`parse_hybrid`).

    Raises ``ValueError`` when a class is out of range, a weight is negative, or weights do not sum to 1.
    """
    if isinstance(pairs, (str, Mapping)):
        pairs = [pairs]  # a single spec is a common slip; accept it
    if len(pairs) == 0:
        raise ValueError("no hybrid specs given")
    rows = torch.zeros(len(pairs), num_classes)
    for i, spec in enumerate(pairs):
        weights = parse_hybrid(spec)
        for c, w in weights.items():
            if not 0 <= c < num_classes:
                raise ValueError(f"class {c} in hybrid spec {spec!r} is out of range 0..{num_classes - 1}")
            if w < 0:
                raise ValueError(f"negative weight {w} for class {c} in hybrid spec {spec!r}")
            rows[i, c] = w
        total = sum(weights.values())
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            raise ValueError(f"weights of hybrid spec {spec!r} sum to {total:g}, not 1")
    return rows / rows.sum(1, keepdim=True)  # remove rounding left by e.g. 0.33/0.33/0.34


def compare_dreams(
    policy: nn.Module,
    reference: nn.Module,
    targets: Tensor,
    seed: int = 0,
    init_mean: float = 0.5,
    init_std: float = 1.0,
    clamp: tuple[float | None, float | None] | None = (0.0, 1.0),
    **dream_kwargs,
) -> tuple[DreamResult, DreamResult]:
    """Dream the same targets in a policy and its reference from the *same* starting noise, so a visible
    difference is a difference between the networks. Returns ``(policy_result, reference_result)``."""
    x0 = initial_noise(len(targets), seed, init_mean, init_std, clamp)
    kwargs = dict(dream_kwargs, clamp=clamp, init=x0)
    return dream(policy, targets, **kwargs), dream(reference, targets, **kwargs)
