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

Padding (``config.prompt.pad_id`` >= 0; -1 = none): the rows may hold that id at positions
that are not text (rows shorter than L, or SFT prompts of different lengths left-padded so
that their completions start in one column; P_i of mode "data" then counts the pads
before the prompt). ``real = x0 != pad_id`` (:func:`real_positions`) is the backbone's
``attention_mask``, and the pads join the positions excluded by the same masks the prompt
uses (:func:`kept_positions`): never corrupted and no loss where the process keeps a
prompt (LLaDA / Dream: the kept set is prompt ∪ pads, so the SFT answer length counts
real tokens only), not counted in the loss's mean otherwise (``valid``), never lifted,
never pooled. The pad id must not be the mask id (LLaDA's generate.py asserts the same)
and must not occur as text in the rows.
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
    pad_id: the id of padded (not attended) positions, or None for unpadded rows.
  """
  mode: str = "none"
  length: int = 0
  seq_len: int | None = None
  pad_id: int | None = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"prompt mode must be one of {MODES}, got {self.mode!r}")
    if self.mode == "prefix" and self.length < 1:
      raise ValueError(f"prompt mode 'prefix' needs a length >= 1, got {self.length}")
    if self.mode != "prefix" and self.length != 0:
      raise ValueError(f"prompt length {self.length} is read only by mode 'prefix' "
                       f"(mode is {self.mode!r}); set it to 0")
    if self.pad_id is not None and (isinstance(self.pad_id, bool)
                                    or not isinstance(self.pad_id, int) or self.pad_id < 0):
      raise ValueError(f"pad_id must be None or an id >= 0, got {self.pad_id!r}")

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


def real_positions(spec: PromptSpec, x0: jax.Array) -> jax.Array | None:
  """bool [b, L], True where x0 [b, L] is text (not ``spec.pad_id``), or None when the rows
  are unpadded (the backbone's ``attention_mask``; see the module doc)."""
  if spec.pad_id is None:
    return None
  chex.assert_rank(x0, 2)
  return x0 != spec.pad_id


def kept_positions(keep: jax.Array | None, real: jax.Array | None) -> jax.Array | None:
  """The positions a keep-taking process never corrupts: the prompt ∪ the pads (bool
  [b, L]), the prompt alone without padding, None with neither."""
  if real is None:
    return keep
  pads = jnp.logical_not(real)
  return pads if keep is None else jnp.logical_or(keep, pads)


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
  ``config.prompt.pad_id`` (absent or -1: unpadded rows) must be an id of the process's
  vocabulary other than its mask id.
  """
  group = config.get("prompt", None)
  mode = "none" if group is None else str(group.get("mode", "none"))
  plen = 0 if group is None else int(group.get("length", 0))
  pad = -1 if group is None else group.get("pad_id", -1)
  if isinstance(pad, bool) or not isinstance(pad, int) or not -1 <= pad < process.vocab_size:
    raise ValueError(f"config.prompt.pad_id must be -1 (no padding) or an id in "
                     f"[0, {process.vocab_size}), got {pad!r}")
  if pad >= 0 and pad == process.mask_id:
    raise ValueError(f"config.prompt.pad_id={pad} is the mask id of "
                     f"config.diffusion.process={process.name!r}; padding needs its own id")
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
  return PromptSpec(mode=mode, length=plen, seq_len=int(length),
                    pad_id=None if pad < 0 else int(pad))
