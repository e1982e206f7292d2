"""The backbone contract: what every model family provides to the rest of the package.

A *family* is one file under ``tokendrift_jax/models/`` (or anywhere, registered with
:func:`tokendrift_jax.models.register`) that defines a :class:`Family`. Nothing else in the
package knows a family's internals: training, TokenDrift, sampling, evaluation, checkpoints
and FLOP accounting use only what is declared here.

A family's **config** (a frozen dataclass, stored in checkpoints) provides:

* ``vocab_size: int``, ``length: int`` (maximum sequence length), ``dropout: float`` (the
  training-mode rate; 0 when the family has none);
* ``feature_dim: int``: size of the pooled TokenDrift feature h = [mean H^(L-1), mean H^(L)]
  (paper Sec. 3: 2·d);
* ``mask_id: int | None``: the id masked (absorbing-state) diffusion uses, None when the
  architecture has no mask token;
* ``time_conditioned: bool``: whether the network reads the noise level σ;
* ``to_dict()`` / ``from_dict(d)`` (unknown fields are an error), ``num_params()``.

A family's **module** (an ``nnx.Module`` built as ``module_cls(config, *, dtype,
attention_impl, remat, remat_policy, scan_layers, rngs)``; a family may ignore compute
options it has no use for) provides:

* ``__call__(input_ids=None, sigma=None, *, embeds=None, dropout_rng=None,
  return_hidden=False, attention_mask=None)``: int[B, L] ids or float[B, L, d] input
  embeddings (the soft-token lift, paper Eq. 3), σ float[B] (ignored when not
  time-conditioned), an optional dropout key; returns float32 logits [B, L, V], or
  ``(logits, hidden)`` with the last k block outputs (each float32 [B, L, d]) when
  ``return_hidden=k`` (True = all);
* padding: ``attention_mask`` bool [B, L] (True = real token; None = all real) masks the
  padded keys out of every query's attention, and the family places its rotary positions
  as its public batched generation does (Dream: counted from each row's first real token;
  LLaDA and the DiT: 0..L−1 of the padded row, relative rotary makes that the same up to
  rounding). Outputs at padded positions are meaningless: every consumer ignores them
  (losses, features, the drift's pooling, the samplers). With None the traced program is
  the one the family traced before padding existed (``tests/models/test_padding.py``
  checks the lowered text);
* ``embedding_table()``: the token-embedding matrix E, float32 [V, d] (the lift's E).

Parameters are a pure dict of float32 arrays (``nnx.to_pure_dict``), in every family.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping, Protocol


class BackboneConfig(Protocol):
  vocab_size: int
  length: int
  dropout: float

  @property
  def feature_dim(self) -> int: ...

  @property
  def mask_id(self) -> int | None: ...

  @property
  def time_conditioned(self) -> bool: ...

  def to_dict(self) -> dict[str, Any]: ...

  def num_params(self) -> int: ...


class ConfigFields:
  """``to_dict`` / ``to_json`` / ``from_dict`` for a family's frozen config dataclass (the
  contract's serialisation): ``class MyConfig(ConfigFields)`` under ``@dataclass``."""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]):
    """The config of the fields in ``d``; an unknown field is a ValueError naming it."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
    return cls(**d)


class FlopModel(Protocol):
  """Analytic matmul FLOPs of one sequence of ``length`` tokens (2 per multiply-add).

  ``perf/flops.py`` composes a training step from these; each family states its own.
  """

  def forward(self, length: int, *, output_layer: bool) -> int:
    """One forward pass (``output_layer=False``: up to the last block, as the encoder)."""

  def backward(self, length: int) -> int:
    """The backward pass of a forward with the output layer, weight and input grads."""

  def input_backward(self, length: int) -> int:
    """The backward of the block stack when only input gradients are needed (the frozen
    encoder's soft pass)."""

  def shared_forward(self, length: int) -> int:
    """What a second forward with the same σ and weights reuses from the first (the
    conditioning path), so is not computed again; 0 when nothing is shared."""

  def recompute(self, length: int, policy: str, *, weight_grads: bool) -> int:
    """Forward products recomputed in the backward pass under remat ``policy``."""

  def lift(self, length: int) -> int:
    """The soft-token product p·E over all positions, 2·L·V·d."""


@dataclasses.dataclass(frozen=True)
class Family:
  """A registered backbone family.

  Attributes:
    name: the ``config.model.family`` value and the checkpoint's ``family``.
    config_cls: the architecture dataclass (see the module docstring).
    module_cls: the nnx.Module class.
    flops: ``flops(config) -> FlopModel``.
    compatible_fields: config fields that a run may set differently from its init
      checkpoint (e.g. dropout); ``length`` may always be shorter. Every other field must
      be equal.
    hub_names: released checkpoints by diffusion process, for the offline hint.
    sizes: named architectures (config fields) that the benchmark's ``--size`` selects.
    logical_axes: ``logical_axes(path, shape) -> names`` for ``config.mesh.param_sharding
      = "rules"`` (:mod:`tokendrift_jax.sharding`): for a parameter's path in the pure
      param dict (keys as strings, e.g. ``("blocks", "0", "attn_qkv", "kernel")``) and its
      shape, one logical name per dim from {"vocab", "embed", "heads", "kv_heads", "mlp",
      "layers", None}; ValueError naming the path for a parameter it does not know. None:
      the family offers only the "replicated" and "fsdp" placements.
    tokenizer: hub name of the released checkpoints' tokenizer, what an evaluation decodes
      samples with when its config names none ("" = none: the config must name one).
    head_keys: top-level keys of the pure parameter dict that only the output layer reads
      (its final norm and projection; never the embedding table, which a tied output layer
      shares). A family that declares them also accepts ``head=False`` in ``__call__``
      (with ``return_hidden``: returns ``(None, hidden)`` and never reads them), and
      TokenDrift's frozen encoder, which needs only the hidden states, does not hold them
      (``objectives.tokendrift.drop_head``). () = the family has no such option.
    skip_special_tokens: how the family's released code decodes samples to text: MDLM and
      DUO keep special tokens (plain ``batch_decode``), LLaDA's ``generate.py`` drops them
      (``skip_special_tokens=True``). An evaluation's default.
  """
  name: str
  config_cls: type
  module_cls: type
  flops: Callable[[Any], FlopModel]
  compatible_fields: tuple[str, ...] = ()
  hub_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
  sizes: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  logical_axes: Callable[[tuple[str, ...], tuple[int, ...]], tuple[str | None, ...]] | None = None
  tokenizer: str = ""
  skip_special_tokens: bool = False
  head_keys: tuple[str, ...] = ()
