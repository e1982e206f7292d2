"""The paper's ablations (Tables 3-6), defined once.

Each ablation is a TokenDrift run with a few config fields changed, given here as a nested
override dict on the training config (``{"drift": {"lift": "hard"}}``), together with the
paper table it belongs to and the step at which the paper compares it. Two places use it:

- ``configs/ablations/<name>.py``: the paper-scale run, ``paper_config(mdlm_drift, name)``
  (the overrides, and ``train.steps = 5000`` where the paper compares at step 5k);
- ``configs/repro_small_*.py``: ``c.variants = variants()``, the same overrides as extra
  TokenDrift stages of the small-scale reproduction (same budget as its TokenDrift run;
  ``tokendrift_jax/experiments/synthetic.py`` applies them).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

# Tables 5 and 6 compare their rows at step 5k of the 13k-step run (App. F).
PAPER_COMPARISON_STEPS = 5000


@dataclasses.dataclass(frozen=True)
class Ablation:
  tables: tuple[int, ...]        # the paper table(s) the row belongs to
  overrides: Mapping[str, Any]   # nested config overrides (empty: the default run itself)
  paper_steps: int | None = None  # the paper compares it at this step; None = full run
  description: str = ""


_5K = PAPER_COMPARISON_STEPS

ABLATIONS: dict[str, Ablation] = {
    # Table 3: hard straight-through lift y_ST E instead of the soft p E.
    "lift_hard": Ablation((3,), {"drift": {"lift": "hard"}},
                          description="hard straight-through lift"),
    # Table 4: mirror-teacher objectives in logit space, and each objective with the
    # backbone's own loss added (weight 1). feature_l2 is the default fixed_point objective.
    "mirror_kl": Ablation((4,), {"drift": {"objective": "mirror_kl"}},
                          description="mirror-kl, drift only"),
    "mirror_mse": Ablation((4,), {"drift": {"objective": "mirror_mse"}},
                           description="mirror-mse, drift only"),
    "feature_l2_with_base": Ablation((4,), {"drift": {"base_loss_weight": 1.0}},
                                     description="fixed_point + backbone loss"),
    "mirror_kl_with_base": Ablation(
        (4,), {"drift": {"objective": "mirror_kl", "base_loss_weight": 1.0}},
        description="mirror-kl + backbone loss"),
    "mirror_mse_with_base": Ablation(
        (4,), {"drift": {"objective": "mirror_mse", "base_loss_weight": 1.0}},
        description="mirror-mse + backbone loss"),
    # Table 5: real and generated queues of 4 / 64 features (default 1024), at step 5k.
    "queue_4": Ablation((5,), {"drift": {"queue_size": 4}}, _5K, "queues of 4"),
    "queue_64": Ablation((5,), {"drift": {"queue_size": 64}}, _5K, "queues of 64"),
    # Table 6: attraction : repulsion (b+ and b- scaled; default 1 : 1), at step 5k.
    "ratio_1_0": Ablation((6,), {"drift": {"attraction": 1.0, "repulsion": 0.0}}, _5K, "1 : 0"),
    "ratio_2_1": Ablation((6,), {"drift": {"attraction": 2.0, "repulsion": 1.0}}, _5K, "2 : 1"),
    "ratio_0_1": Ablation((6,), {"drift": {"attraction": 0.0, "repulsion": 1.0}}, _5K, "0 : 1"),
    "ratio_1_2": Ablation((6,), {"drift": {"attraction": 1.0, "repulsion": 2.0}}, _5K, "1 : 2"),
    # The reference row of Tables 5 and 6: the default TokenDrift run stopped at step 5k.
    # No overrides, so it is no variant of the small reproduction (that is its drift run).
    "default_5k": Ablation((5, 6), {}, _5K, "default run at step 5k (Tables 5 and 6)"),
}


def get(name: str) -> Ablation:
  """The named ablation; KeyError naming the known ones."""
  if name not in ABLATIONS:
    raise KeyError(f"unknown ablation {name!r}; known: {', '.join(sorted(ABLATIONS))}")
  return ABLATIONS[name]


def overrides(name: str) -> dict:
  """A fresh (deep-copied) nested override dict of the named ablation."""
  return copy.deepcopy(dict(get(name).overrides))


def names(table: int | None = None) -> list[str]:
  """Ablation names, optionally those of one paper table, in definition order."""
  return [n for n, a in ABLATIONS.items() if table is None or table in a.tables]


def _unknown(node, over: Mapping, where: str) -> list[str]:
  bad = []
  for key, value in over.items():
    path = f"{where}.{key}"
    if key not in node:
      bad.append(f"{path}: no such field")
    elif isinstance(value, Mapping):
      if not isinstance(node[key], ml_collections.ConfigDict):
        bad.append(f"{path}: a value, not a section")
      else:
        bad += _unknown(node[key], value, path)
    elif isinstance(node[key], ml_collections.ConfigDict):
      bad.append(f"{path}: a section, not a value")
  return bad


def _set(node, over: Mapping) -> None:
  for key, value in over.items():
    if isinstance(value, Mapping):
      _set(node[key], value)
    else:
      node[key] = value


def apply_overrides(config: ml_collections.ConfigDict, over: Mapping,
                    where: str = "config") -> ml_collections.ConfigDict:
  """Sets existing fields of ``config`` (in place) from a nested dict; returns it.

  Unknown fields, and dicts given for a plain field (or values for a section), raise
  ValueError naming every one of them before anything is changed.
  """
  bad = _unknown(config, over, where)
  if bad:
    raise ValueError(f"bad config override: {'; '.join(bad)}")
  _set(config, over)
  return config


def apply(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Applies the named ablation's overrides to ``config`` in place; returns it."""
  return apply_overrides(config, overrides(name))


def paper_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The paper-scale run of an ablation: its overrides, and ``train.steps`` set to the step
  at which the paper compares it (Tables 5 and 6: 5k). In place; returns ``config``."""
  apply(config, name)
  steps = get(name).paper_steps
  if steps is not None:
    config.train.steps = steps
  return config


def variants() -> ml_collections.ConfigDict:
  """``config.variants`` of the small reproduction: name -> overrides of every ablation
  that changes a field (the default run is that experiment's own TokenDrift stage)."""
  return ml_collections.ConfigDict(
      {n: overrides(n) for n, a in ABLATIONS.items() if a.overrides})
