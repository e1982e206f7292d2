"""Analytic FLOP count of a training step, whatever its objective.

Counted: matrix products only (2 FLOPs per multiply-add), the convention of model-FLOPs
utilisation (MFU; Chowdhery et al. 2022, App. B). Elementwise work (norms, softmax,
activations, rotary, dropout bits, Adam, the [B, L, V] log-softmax / softmax) is not
counted; it is what XLA's own count has on top (see ``docs/PERFORMANCE.md``).

The backbone's own passes come from its family's :class:`models.base.FlopModel`
(``family.flops(config)``; the DiT's is ``models.dit.DiTFlops``, which lists its terms);
this module composes a step from them: every objective's micro-step runs the generator forward
and backward once per sequence, and the objective adds its own passes
(``Objective.extra_flops``: TokenDrift's below, a distillation's teacher forwards). Notation: L = sequence length, b = sequences per
micro-batch, N = b (the gathered anchors of one micro-step), m = the feature size
(``config.feature_dim``), Q = queue size, T = number of drift temperatures.

**Passes of one micro-step.**

* ``generator_fwd``     forward(out=True)
* ``generator_bwd``     backward: weight and activation cotangents of that forward.
* ``encoder_clean_fwd`` forward(out=False) on E[x0] (u; no gradient); the frozen encoder
  returns block outputs only, so XLA removes its unused output layer.
* ``encoder_soft_fwd``  forward(out=False) on the lifted p·E, minus ``shared_forward``: σ
  and the weights are those of the clean pass, so what depends on them alone (the DiT's
  conditioning path) is computed once.
* ``encoder_soft_bwd``  ``input_backward``: cotangent w.r.t. the input embeddings only (the
  encoder is frozen).
* ``lift_fwd``          2·L·V·d: p [L, V] · E [V, d] at every position (the product is
  formed before observed positions are replaced by E[x̄]).
* ``lift_bwd``          2·L·V·d: p̄ = ẽ̄·Eᵀ (E is frozen: no Ē).
* ``drift``             4·N·m·(N+Q)·(1+T), per micro-step (not per sequence): for the
  positive and the negative set (each N current + Q queued rows) the cross term of the
  squared distances (2·N·(N+Q)·m) and the T weighted sums W·Y (2·T·N·(N+Q)·m).

Continuation micro-step: generator_fwd + generator_bwd. TokenDrift micro-step: all of the
above (the same for the fixed-point and mirror objectives: the mirror direction is the
same vjp through the lift and encoder). A step is ``n_micro`` micro-steps; the optimizer
update is elementwise (0).

**Recomputation** (hardware, not model FLOPs): with remat on the blocks, the backward pass
re-runs the forward products it reads, in every differentiated pass (the generator, and
the encoder's soft pass); see ``FlopModel.recompute``. Reported as ``recompute``; MFU uses
model FLOPs only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tokendrift_jax import models

@dataclasses.dataclass(frozen=True)
class StepFlops:
  """FLOPs of one training step, by pass (each already summed over the step)."""
  terms: dict[str, int]
  recompute: int
  tokens: int

  @property
  def model(self) -> int:
    return sum(self.terms.values())

  @property
  def hardware(self) -> int:
    return self.model + self.recompute

  def to_dict(self) -> dict[str, Any]:
    return {"terms": dict(self.terms), "model_flops": self.model,
            "recompute_flops": self.recompute, "hardware_flops": self.hardware,
            "tokens": self.tokens, "model_flops_per_token": self.model / self.tokens}


def step_flops(cfg, *, objective, length: int, micro_batch: int, n_micro: int = 1,
               remat_policy: str = "") -> StepFlops:
  """The analytic count of one step (``n_micro`` micro-steps of ``micro_batch`` sequences).

  Args:
    cfg: the backbone architecture (any registered family's config).
    objective: the run's :class:`tokendrift_jax.objectives.Objective` (its
      ``extra_flops`` adds its passes to the generator's).
    length: training sequence length L.
    micro_batch: sequences per micro-step (the global micro-batch, all devices).
    n_micro: micro-steps per optimizer step.
    remat_policy: "" (no remat) or a ``jax.checkpoint_policies`` name.
  """
  if length < 1 or micro_batch < 1 or n_micro < 1:
    raise ValueError(f"length={length}, micro_batch={micro_batch}, n_micro={n_micro} must "
                     f"all be >= 1")
  fm = models.family_of(cfg).flops(cfg)
  seqs = micro_batch * n_micro
  terms = {
      "generator_fwd": seqs * fm.forward(length, output_layer=True),
      "generator_bwd": seqs * fm.backward(length),
  }
  recompute = seqs * fm.recompute(length, remat_policy, weight_grads=True)
  extra, extra_recompute = objective.extra_flops(fm, cfg, length=length,
                                                 micro_batch=micro_batch, n_micro=n_micro,
                                                 remat_policy=remat_policy)
  terms.update(extra)
  return StepFlops(terms=terms, recompute=recompute + extra_recompute, tokens=seqs * length)
