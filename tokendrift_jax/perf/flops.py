"""Analytic FLOP count of the continuation and TokenDrift training steps.

Counted: matrix products only (2 FLOPs per multiply-add), the convention of model-FLOPs
utilisation (MFU; Chowdhery et al. 2022, App. B). Elementwise work (LayerNorm, softmax,
GELU, rotary, dropout bits, Adam, the [B, L, V] log-softmax / softmax) is not counted; it is
what XLA's own count has on top (see ``docs/PERFORMANCE.md``).

Notation: d = hidden_size, r = mlp_ratio, n = n_blocks, c = cond_dim, V = vocab_size,
f = 256 (the timestep frequency embedding), L = sequence length, b = sequences per
micro-batch, N = b (the gathered anchors of one micro-step), m = 2d (feature size),
Q = queue size, T = number of drift temperatures.

**DiT forward, per token** (``models/dit.py``; every Linear is x·W)::

  block linears   2·(3d² + d² + 2·r·d²)   qkv, attn_out, mlp in + out  (= 2·their params)
  attention       2·2·L·d                 QKᵀ (L keys × d) and P·V (L values × d), all heads
  output layer    2·d·V                   (generator only)

**DiT forward, per sequence** (the conditioning path, independent of L)::

  sigma map       2·(f·c + c²)            TimestepEmbedder's two Linears
  adaLN           n·2·c·6d                one per block
  final adaLN     2·c·2d                  (generator only)

The embedding lookup is a gather (0 FLOPs).

**Passes of one micro-step.** ``fwd(out)`` = the forward above with (out=True) or without
(out=False) the output layer; the frozen encoder returns block outputs only, so XLA removes
its unused output layer.

* ``generator_fwd``    fwd(out=True)
* ``generator_bwd``    2·fwd(out=True) − 2·f·c: every product needs the cotangent of both
  operands (weights, and activations down to the embedding, whose gradient is a
  scatter-add), except the first sigma-map Linear, whose input (the sinusoid of σ) needs
  none.
* ``encoder_clean_fwd`` fwd(out=False) on E[x0] (u; no gradient).
* ``encoder_soft_fwd``  fwd(out=False) on the lifted p·E, minus the conditioning path: σ
  and the weights are those of the clean pass, so its sigma map and adaLN products are
  the same values and are computed once.
* ``encoder_soft_bwd``  cotangent w.r.t. the input embeddings only (the encoder is frozen):
  1× the block linears (x̄ = ȳ·Wᵀ, no weight gradient) and 2× attention (both operands of
  QKᵀ and P·V are activations); the conditioning path is constant (0).
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
the encoder's soft pass); see :func:`recompute_per_sequence`. Reported as ``recompute``;
MFU uses model FLOPs only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tokendrift_jax.models.dit import FREQ_EMBED_DIM, DiTConfig

OBJECTIVES = ("continuation", "drift")
REMAT_POLICIES = ("", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")


def block_linear_per_token(cfg: DiTConfig) -> int:
  """2·(3d² + d² + 2rd²): the four Linears of one block for one token."""
  d, r = cfg.hidden_size, cfg.mlp_ratio
  return 2 * (3 * d * d + d * d + 2 * r * d * d)


def attention_per_token(cfg: DiTConfig, length: int) -> int:
  """2·2·L·d: QKᵀ and P·V of one token against L positions, summed over heads."""
  return 4 * length * cfg.hidden_size


def output_layer_per_token(cfg: DiTConfig) -> int:
  return 2 * cfg.hidden_size * cfg.vocab_size


def conditioning_per_sequence(cfg: DiTConfig, *, final: bool) -> int:
  """Sigma map + per-block adaLN (+ final adaLN): 2(fc + c²) + n·12cd (+ 4cd)."""
  c, d = cfg.cond_dim, cfg.hidden_size
  total = 2 * (FREQ_EMBED_DIM * c + c * c) + cfg.n_blocks * 2 * c * 6 * d
  if final:
    total += 2 * c * 2 * d
  return total


def forward_per_sequence(cfg: DiTConfig, length: int, *, output_layer: bool) -> int:
  """One DiT forward over one sequence of ``length`` tokens."""
  per_token = cfg.n_blocks * (block_linear_per_token(cfg) + attention_per_token(cfg, length))
  if output_layer:
    per_token += output_layer_per_token(cfg)
  return length * per_token + conditioning_per_sequence(cfg, final=output_layer)


def lift_per_sequence(cfg: DiTConfig, length: int) -> int:
  """2·L·V·d: the soft-token product p·E over all positions."""
  return 2 * length * cfg.vocab_size * cfg.hidden_size


def drift_per_microstep(n: int, m: int, queue_size: int, n_temperatures: int) -> int:
  """4·N·m·(N+Q)·(1+T): distances to and weighted sums over both reference sets."""
  return 4 * n * m * (n + queue_size) * (1 + n_temperatures)


def recompute_per_sequence(cfg: DiTConfig, length: int, policy: str, *,
                           weight_grads: bool) -> int:
  """Extra forward products of one differentiated block stack under remat ``policy``.

  Only what the backward pass reads is recomputed (XLA removes the rest):

  * ``nothing_saveable``: every product of the block, except, when the stack has no
    weight gradients (the frozen encoder), the MLP's output Linear: its result only forms
    the block output, and the next block's input is saved. The adaLN products depend on
    the conditioning only and are not recomputed.
  * ``dots_with_no_batch_dims_saveable``: the attention products (they have batch
    dimensions; Linear outputs are saved); without weight gradients only QKᵀ (P·V's result
    only feeds attn_out, whose input is needed for its weight gradient alone).
  * ``dots_saveable`` / ``everything_saveable`` / "": none.
  """
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat policy must be one of {REMAT_POLICIES}, got {policy!r}")
  d, r = cfg.hidden_size, cfg.mlp_ratio
  attn = cfg.n_blocks * length * attention_per_token(cfg, length)
  if policy == "nothing_saveable":
    linear = cfg.n_blocks * length * block_linear_per_token(cfg)
    if not weight_grads:
      linear -= cfg.n_blocks * length * 2 * r * d * d
    return linear + attn
  if policy == "dots_with_no_batch_dims_saveable":
    return attn if weight_grads else attn // 2
  return 0


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


def step_flops(cfg: DiTConfig, *, objective: str, length: int, micro_batch: int,
               n_micro: int = 1, queue_size: int = 0, n_temperatures: int = 0,
               remat_policy: str = "") -> StepFlops:
  """The analytic count of one step (``n_micro`` micro-steps of ``micro_batch`` sequences).

  Args:
    cfg: the backbone architecture.
    objective: "continuation" or "drift".
    length: training sequence length L.
    micro_batch: sequences per micro-step (the global micro-batch, all devices).
    n_micro: micro-steps per optimizer step.
    queue_size, n_temperatures: Q and |T| of the drift (ignored for continuation).
    remat_policy: "" (no remat) or a ``jax.checkpoint_policies`` name.
  """
  if objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
  if length < 1 or micro_batch < 1 or n_micro < 1:
    raise ValueError(f"length={length}, micro_batch={micro_batch}, n_micro={n_micro} must "
                     f"all be >= 1")
  seqs = micro_batch * n_micro
  gen_fwd = forward_per_sequence(cfg, length, output_layer=True)
  terms = {
      "generator_fwd": seqs * gen_fwd,
      "generator_bwd": seqs * (2 * gen_fwd - 2 * FREQ_EMBED_DIM * cfg.cond_dim),
  }
  recompute = seqs * recompute_per_sequence(cfg, length, remat_policy, weight_grads=True)
  if objective == "drift":
    if queue_size < 1 or n_temperatures < 1:
      raise ValueError(f"drift needs queue_size >= 1 and n_temperatures >= 1, got "
                       f"{queue_size} and {n_temperatures}")
    enc_fwd = forward_per_sequence(cfg, length, output_layer=False)
    linear = cfg.n_blocks * length * block_linear_per_token(cfg)
    attn = cfg.n_blocks * length * attention_per_token(cfg, length)
    lift = lift_per_sequence(cfg, length)
    terms.update({
        "encoder_clean_fwd": seqs * enc_fwd,
        # Same σ and weights as the clean pass: the conditioning path is computed once.
        "encoder_soft_fwd": seqs * (enc_fwd - conditioning_per_sequence(cfg, final=False)),
        "encoder_soft_bwd": seqs * (linear + 2 * attn),
        "lift_fwd": seqs * lift,
        "lift_bwd": seqs * lift,
        "drift": n_micro * drift_per_microstep(micro_batch, 2 * cfg.hidden_size, queue_size,
                                               n_temperatures),
    })
    recompute += seqs * recompute_per_sequence(cfg, length, remat_policy, weight_grads=False)
  return StepFlops(terms=terms, recompute=recompute, tokens=seqs * length)
