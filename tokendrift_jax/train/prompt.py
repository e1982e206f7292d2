"""Prompts of prompt-conditioned refinement: which positions of a training row are given.

A prompt is a prefix of each row that the forward process never corrupts (the ``keep``
mask of ``LLaDAProcess.corrupt`` / ``loss``): the generator completes the rest, TokenDrift
lifts only its predicted completion positions, and continuation trains LLaDA's SFT loss.
``config.prompt.mode`` says where the prompt lengths come from:

* ``"none"``: no prompt (unconditional, the paper); the batch is int32 [b, L].
* ``"prefix"``: the first ``config.prompt.length`` = P tokens of every row (1 ≤ P ≤ L − 1);
  the batch is int32 [b, L].
* ``"data"``: per-row lengths P_i ∈ [0, L − 1] from the data (SFT pairs; the companion
  ``<stem>.prompt_lengths.npy`` of ``data.train_tokens``, :mod:`tokendrift_jax.data.tokens`),
  carried as one extra last column: the batch is int32 [b, L + 1], ``[:, :L]`` the tokens,
  ``[:, L]`` the prompt lengths.

keep[i, t] = t < P_i. Every row keeps at least one completion position, so the
"completion" pooling of ``drift.features`` never averages over nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import chex
import jax
import jax.numpy as jnp

MODES = ("none", "prefix", "data")


@dataclasses.dataclass(frozen=True)
class PromptSpec:
  """Where the prompt of each training row is (hashable: part of the step's static context).

  Attributes:
    mode: "none", "prefix" or "data" (see the module docstring).
    length: P of mode "prefix"; 0 otherwise.
    seq_len: the training length L, when known: a micro-batch must then have exactly
      L + ``extra_columns`` columns (checked at trace time).
  """
  mode: str = "none"
  length: int = 0
  seq_len: int | None = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"prompt mode must be one of {MODES}, got {self.mode!r}")
    if self.mode == "prefix" and self.length < 1:
      raise ValueError(f"prompt mode 'prefix' needs a length >= 1, got {self.length}")
    if self.mode != "prefix" and self.length != 0:
      raise ValueError(f"prompt length {self.length} is read only by mode 'prefix' "
                       f"(mode is {self.mode!r}); set it to 0")

  @property
  def active(self) -> bool:
    return self.mode != "none"

  @property
  def extra_columns(self) -> int:
    """Columns a batch carries beyond the L tokens (1 for the per-row lengths of "data")."""
    return 1 if self.mode == "data" else 0


def split_prompt(spec: PromptSpec, batch: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """A micro-batch as (x0 int32 [b, L], keep bool [b, L] or None when there is no prompt).

  ``batch``: int32 [b, L + spec.extra_columns]. keep[i, t] = t < P_i.
  """
  chex.assert_rank(batch, 2)
  if spec.seq_len is not None and batch.shape[1] != spec.seq_len + spec.extra_columns:
    layout = (f"{spec.seq_len} tokens + 1 prompt-length column" if spec.extra_columns
              else f"{spec.seq_len} tokens")
    raise ValueError(f"micro-batch {tuple(batch.shape)} must have {layout} per row "
                     f"(prompt mode {spec.mode!r})")
  if not spec.active:
    return batch, None
  if spec.mode == "prefix":
    x0 = batch
    lengths = jnp.full(batch.shape[:1], spec.length, jnp.int32)
  else:
    x0, lengths = batch[:, :-1], batch[:, -1]
  positions = jnp.arange(x0.shape[1], dtype=jnp.int32)
  return x0, positions[None, :] < lengths[:, None]


def _takes_keep(fn) -> bool:
  try:
    return "keep" in inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False


def from_config(config: Any, length: int, process) -> PromptSpec:
  """The PromptSpec of ``config.prompt`` for rows of ``length`` tokens under ``process``.

  Checks (ValueError naming the field): the mode, P in [1, length − 1] for "prefix",
  data.kind "tokens" for "data", a process whose ``corrupt`` and ``loss`` take ``keep=``
  when a prompt is used, and ``drift.pool`` = "completion" only with a prompt (TokenDrift
  runs). A config without a ``prompt`` group (written before it existed) has no prompt.
  """
  group = config.get("prompt", None)
  mode = "none" if group is None else str(group.get("mode", "none"))
  plen = 0 if group is None else int(group.get("length", 0))
  if mode not in MODES:
    raise ValueError(f"config.prompt.mode must be one of {MODES}, got {mode!r}")
  if mode == "prefix" and not 1 <= plen <= length - 1:
    raise ValueError(f"config.prompt.length={plen} must be in [1, {length - 1}] with "
                     f"config.prompt.mode='prefix' (config.model.length={length}; the "
                     f"completion needs at least one token)")
  if mode != "prefix" and plen != 0:
    raise ValueError(f"config.prompt.length={plen} is read only with "
                     f"config.prompt.mode='prefix' (mode is {mode!r}); set it to 0")
  if mode == "data" and config.data.get("kind", "text") != "tokens":
    raise ValueError(f"config.prompt.mode='data' reads per-row prompt lengths next to "
                     f"config.data.train_tokens: it needs config.data.kind='tokens', got "
                     f"{config.data.get('kind', 'text')!r}")
  if mode != "none" and not (_takes_keep(process.corrupt) and _takes_keep(process.loss)):
    raise ValueError(f"config.prompt.mode={mode!r} needs a diffusion process that never "
                     f"corrupts a prompt (corrupt/loss with keep=); "
                     f"config.diffusion.process={process.name!r} has none (use 'llada')")
  return PromptSpec(mode=mode, length=plen, seq_len=int(length))
