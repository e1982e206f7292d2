"""Backbone checkpoints: family and process in the metadata; checkpoints of the v1 layout
(before model families, ``meta["arch"]``) still load; ambiguity is an error."""

from __future__ import annotations

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tokendrift_jax import checkpoints
from tokendrift_jax import models
from tokendrift_jax.models.dit import DiTConfig

TINY = DiTConfig(vocab_size=17, hidden_size=16, cond_dim=8, n_blocks=2, n_heads=2, length=8)


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: (np.asarray(x) + rng.standard_normal(np.shape(x))
                                 ).astype(np.float32), models.init_params(TINY, seed))


def _write_v1(path, meta):
  """A checkpoint as save_backbone wrote it before families: no 'family', meta['arch']."""
  payload = {"format": checkpoints.FORMAT, "model": TINY.to_dict(), "meta": meta}
  store = jax.tree.map(np.asarray, {k: v for k, v in _params().items()})

  def strkeys(t):
    return {str(k): strkeys(v) for k, v in t.items()} if isinstance(t, dict) else t
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(str(path), args=ocp.args.Composite(params=ocp.args.StandardSave(strkeys(store)),
                                                  config=ocp.args.JsonSave(payload)))
  return str(path)


@pytest.mark.parametrize("arch", ["mdlm", "duo"])
def test_v1_checkpoint_loads_with_family_and_process(tmp_path, arch):
  path = _write_v1(tmp_path / "old", {"arch": arch, "source": "x"})
  cfg, params, meta = checkpoints.load_backbone_params(path)
  assert cfg == TINY and meta["family"] == "dit" and meta["process"] == arch
  assert "arch" not in meta
  chex.assert_trees_all_equal(params, _params())
  assert checkpoints.checkpoint_process(meta, path) == arch


def test_checkpoint_without_process_is_an_error_where_one_is_needed(tmp_path):
  path = _write_v1(tmp_path / "old", {"source": "x"})
  _, meta = checkpoints.read_backbone_config(path)
  assert meta["process"] is None
  with pytest.raises(checkpoints.CheckpointError, match="does not record its diffusion process"):
    checkpoints.checkpoint_process(meta, path)


def test_contradicting_process_and_arch_are_refused(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match="ambiguous"):
    checkpoints.save_backbone(tmp_path / "x", TINY, _params(),
                              meta={"process": "mdlm", "arch": "duo"})
  path = _write_v1(tmp_path / "old", {"process": "duo", "arch": "mdlm"})
  with pytest.raises(checkpoints.CheckpointError, match="ambiguous"):
    checkpoints.read_backbone_config(path)


def test_new_checkpoint_records_family_and_process(tmp_path):
  path = checkpoints.save_backbone(tmp_path / "new", TINY, _params(), meta={"process": "duo"})
  cfg, meta = checkpoints.read_backbone_config(path)
  assert cfg == TINY and meta == {"process": "duo", "family": "dit"}
  with pytest.raises(checkpoints.CheckpointError, match="meta\\['process'\\] must be one of"):
    checkpoints.save_backbone(tmp_path / "bad", TINY, _params(), meta={"process": "sedd"})
