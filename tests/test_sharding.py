"""sharding: the (data, fsdp, tensor) mesh and the logical-axis rules.

Specs are checked against hand-written expectations (the rules table applied by hand to
the shapes below); nothing here compiles a model, so the file runs in about a second.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from tokendrift_jax import models
from tokendrift_jax import sharding
from tokendrift_jax.drift.objective import DriftConfig
from tokendrift_jax.models import dit
from tokendrift_jax.objectives.tokendrift import TokenDrift
from tokendrift_jax.train import builder
from tokendrift_jax.train import step as step_lib


def _mesh(shape):
  return sharding.make_mesh(shape, jax.devices()[:int(np.prod([s for s in shape if s > 0]))])


def _one_line(excinfo):
  assert "\n" not in str(excinfo.value), str(excinfo.value)


# ------------------------------------------------------------------ the mesh


def test_two_entry_shapes_are_tensor_one():
  for shape, want in [((4, 2), (4, 2, 1)), ((-1, 1), (8, 1, 1)), (None, (8, 1, 1)),
                      ((2, -1, 2), (2, 2, 2)), ((1, 2, 4), (1, 2, 4))]:
    mesh = sharding.make_mesh(shape)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == want, (shape, dict(mesh.shape))
  # Devices fill the mesh in order, tensor fastest: a tensor group is neighbouring devices.
  mesh = sharding.make_mesh((1, 2, 4))
  assert [d.id for d in mesh.devices[0, 0]] == [d.id for d in jax.devices()[:4]]
  # The batch is split over data x fsdp only; the rows of a tensor group are the same.
  assert sharding.num_batch_shards(mesh) == 2
  assert sharding.batch_sharding(mesh).spec == P(("data", "fsdp"), None)
  assert sharding.batch_sharding(mesh).shard_shape((8, 16)) == (4, 16)


@pytest.mark.parametrize("shape, message", [
    ((2, 2, 2, 1), "must be \\(data, fsdp\\) or \\(data, fsdp, tensor\\)"),
    ((8,), "must be \\(data, fsdp\\) or \\(data, fsdp, tensor\\)"),
    ((-1, -1, 2), "more than one -1"),
    ((0, 8), "positive ints or one -1"),
    ((2, 2.0, 2), "positive ints or one -1"),
    ((3, -1, 1), "does not divide 8 devices"),
    ((2, 2, 3), "needs 12 devices, have 8"),
])
def test_bad_mesh_shapes_are_one_line_errors(shape, message):
  with pytest.raises(ValueError, match=message) as e:
    sharding.make_mesh(shape)
  _one_line(e)


def test_mesh_from_config_names_the_field():
  import ml_collections  # pylint: disable=import-outside-toplevel
  cfg = ml_collections.ConfigDict(dict(shape=(2, 2, 3), num_devices=0))
  with pytest.raises(ValueError, match="config.mesh: mesh shape") as e:
    sharding.mesh_from_config(cfg)
  _one_line(e)


# ------------------------------------------------------------------ the rules


@pytest.mark.parametrize("names, shape, mesh_shape, want", [
    # Both rules apply: embed over fsdp, heads over tensor.
    (("embed", "heads"), (32, 96), (1, 2, 4), P("fsdp", "tensor")),
    (("heads", "embed"), (32, 32), (2, 2, 2), P("tensor", "fsdp")),
    # 33 is divisible by neither 2 nor 4: the vocab dim stays whole, embed still splits.
    (("vocab", "embed"), (33, 32), (1, 2, 4), P(None, "fsdp")),
    (("embed", "vocab"), (32, 33), (1, 2, 4), P("fsdp", None)),
    # 6 % 4 != 0: the first dim stays whole and tensor is still free for the second.
    (("mlp", "vocab"), (6, 8), (1, 2, 4), P(None, "tensor")),
    # No mesh axis twice: the second tensor dim stays whole even though 4 divides it.
    (("mlp", "vocab"), (128, 64), (1, 2, 4), P("tensor", None)),
    (("heads", "kv_heads"), (8, 8), (2, 2, 2), P("tensor", None)),
    # layers and None are never split; a 1-D scale stays whole.
    (("layers", "embed", "mlp"), (4, 32, 128), (1, 2, 4), P(None, "fsdp", "tensor")),
    ((None,), (32,), (1, 2, 4), P(None)),
    ((), (), (1, 2, 4), P()),
    # Size-1 axes divide everything: the spec names them (the placement is replicated).
    (("embed", "heads"), (32, 96), (8, 1, 1), P("fsdp", "tensor")),
])
def test_logical_to_spec(names, shape, mesh_shape, want):
  assert sharding.logical_to_spec(names, shape, _mesh(mesh_shape)) == want


def test_custom_rules_never_use_an_axis_twice():
  rules = (("embed", "fsdp"), ("mlp", "fsdp"), ("vocab", None))
  mesh = _mesh((2, 2, 2))
  assert sharding.logical_to_spec(("mlp", "embed"), (8, 8), mesh, rules) == P("fsdp", None)
  assert sharding.logical_to_spec(("vocab", "mlp"), (8, 8), mesh, rules) == P(None, "fsdp")
  with pytest.raises(ValueError, match="not a mesh axis") as e:
    sharding.logical_to_spec(("embed",), (8,), mesh, (("embed", "pipeline"),))
  _one_line(e)


def test_rule_errors_name_the_leaf():
  mesh = _mesh((1, 2, 4))
  tree = {"blocks": {"0": {"w": jax.ShapeDtypeStruct((4, 8), jnp.float32)}}}
  with pytest.raises(ValueError, match="'blocks/0/w' with shape \\(4, 8\\) must be a tuple of "
                     "2 names") as e:
    sharding.rules_sharding(tree, mesh, lambda path, shape: ("embed",))
  _one_line(e)
  with pytest.raises(ValueError, match="'blocks/0/w' names 'width'") as e:
    sharding.rules_sharding(tree, mesh, lambda path, shape: ("embed", "width"))
  _one_line(e)
  with pytest.raises(ValueError, match="needs a logical_axes function") as e:
    sharding.param_sharding(tree, mesh, "rules")
  _one_line(e)
  with pytest.raises(ValueError, match="must be one of \\('replicated', 'fsdp', 'rules'\\)"):
    sharding.param_sharding(tree, mesh, "tensor")


def test_replicated_and_fsdp_modes_are_unchanged():
  """The two modes of the (data, fsdp) mesh, on a two-entry shape, as before the tensor
  axis: replicated, or the largest divisible axis over fsdp above min_size elements."""
  tree = {"big": jax.ShapeDtypeStruct((64, 512), jnp.float32),
          "tie": jax.ShapeDtypeStruct((256, 256), jnp.float32),
          "odd": jax.ShapeDtypeStruct((129, 255), jnp.float32),
          "under": jax.ShapeDtypeStruct((128, 127), jnp.float32),
          "second": jax.ShapeDtypeStruct((511, 128), jnp.float32),
          "small": jax.ShapeDtypeStruct((8, 8), jnp.float32),
          "scalar": jax.ShapeDtypeStruct((), jnp.int32)}
  mesh = _mesh((4, 2))
  specs = jax.tree.map(lambda s: s.spec, sharding.param_sharding(tree, mesh, "fsdp"))
  assert specs == {"big": P(None, "fsdp"), "tie": P("fsdp", None), "odd": P(), "under": P(),
                   "second": P(None, "fsdp"), "small": P(), "scalar": P()}
  specs = jax.tree.map(lambda s: s.spec, sharding.param_sharding(tree, mesh, "replicated"))
  assert all(s == P() for s in jax.tree.leaves(specs))


# ------------------------------------------------------------------ the DiT's logical axes


def _tiny_dit(tiny_model_config):
  return tiny_model_config("mdlm")  # V 33, d 32, c 16, 2 blocks, 4 heads, mlp 128


def test_dit_names_every_parameter(tiny_model_config):
  """Every parameter of the tiny and the 170M DiT has one name per dim."""
  for cfg in (_tiny_dit(tiny_model_config), dit.mdlm_small()):
    flat = jax.tree_util.tree_flatten_with_path(models.abstract_params(cfg))[0]
    for key_path, leaf in flat:
      names = dit.logical_axes(sharding.path_names(key_path), leaf.shape)
      assert len(names) == leaf.ndim
      assert set(names) <= set(sharding.LOGICAL_NAMES) | {None}
  assert models.get_family("dit").logical_axes is dit.logical_axes
  with pytest.raises(ValueError, match="DiT has no parameter blocks/0/attn_q/kernel") as e:
    dit.logical_axes(("blocks", "0", "attn_q", "kernel"), (4, 4))
  _one_line(e)
  with pytest.raises(ValueError, match="blocks/1/attn_qkv/kernel has shape \\(4,\\)") as e:
    dit.logical_axes(("blocks", "1", "attn_qkv", "kernel"), (4,))
  _one_line(e)


def test_dit_rules_on_1x2x4(tiny_model_config):
  """(data, fsdp, tensor) = (1, 2, 4): the shard shapes of the tiny DiT, by hand."""
  abstract = models.abstract_params(_tiny_dit(tiny_model_config))
  mesh = _mesh((1, 2, 4))
  shard = jax.tree.map(lambda s, a: s.shard_shape(a.shape),
                       sharding.rules_sharding(abstract, mesh, dit.logical_axes), abstract)
  block = shard["blocks"][0]
  assert block["attn_qkv"]["kernel"] == (16, 24)          # [d/fsdp, 3d/tensor]
  assert block["attn_out"]["kernel"] == (8, 16)           # [d/tensor, d/fsdp]
  assert block["mlp"][0]["kernel"] == (16, 32)            # [d/fsdp, 4d/tensor]
  assert block["mlp"][0]["bias"] == (32,)
  assert block["mlp"][1]["kernel"] == (32, 16)            # [4d/tensor, d/fsdp]
  assert block["mlp"][1]["bias"] == (32,)
  assert block["adaLN_modulation"]["kernel"] == (16, 96)  # [c, 6d/fsdp]
  assert block["norm1"]["weight"] == (32,)
  assert shard["vocab_embed"]["embedding"] == (33, 16)    # V = 33: whole
  assert shard["output_layer"]["linear"]["kernel"] == (16, 33)
  assert shard["sigma_map"]["mlp"][0]["kernel"] == (256, 16)
  assert sharding.unsplit_dims(abstract, mesh, dit.logical_axes) == [
      "output_layer/linear/bias dim 0 (vocab -> tensor): 33 % 4 != 0",
      "output_layer/linear/kernel dim 1 (vocab -> tensor): 33 % 4 != 0",
      "vocab_embed/embedding dim 0 (vocab -> tensor): 33 % 4 != 0"]
  assert sharding.unsplit_dims(abstract, _mesh((8, 1, 1)), dit.logical_axes) == []


def test_optimizer_state_and_ema_follow_the_params(tiny_model_config):
  """mu and nu (float32 or bfloat16) get their parameter's sharding; counts replicated."""
  abstract = models.abstract_params(_tiny_dit(tiny_model_config))
  mesh = _mesh((2, 2, 2))
  drift_objective = TokenDrift(config=DriftConfig(queue_size=4), feature_dim=64)
  for mu_dtype in (None, jnp.bfloat16):
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, mu_dtype=mu_dtype))
    state = jax.eval_shape(lambda p: step_lib.init_state(  # pylint: disable=cell-var-from-loop
        p, opt, seed=0, ema=True, objective=drift_objective), abstract)
    shardings = step_lib.state_sharding(state, mesh, "rules", logical_axes=dit.logical_axes,
                                        objective=drift_objective)
    params = sharding.rules_sharding(abstract, mesh, dit.logical_axes)
    assert shardings.params == params and shardings.ema_params == params
    adam = shardings.opt_state[1][0]
    assert adam.mu == params and adam.nu == params
    assert adam.count == sharding.replicated(mesh)
    assert shardings.opt_state[0] == optax.EmptyState()
    assert all(s == sharding.replicated(mesh)
               for s in jax.tree.leaves((shardings.aux, shardings.step, shardings.rng)))
  assert params["blocks"][0]["attn_qkv"]["kernel"].spec == P("fsdp", "tensor")


# ------------------------------------------------------------------ the builder's checks


def _step_config(tiny_model_config, mesh_shape, param_sharding):
  """A tiny TokenDrift config for build_step, which reads neither checkpoint nor data."""
  from configs import base  # pylint: disable=import-outside-toplevel
  c = base.get_config()
  c.model.update(_tiny_dit(tiny_model_config).to_dict())
  c.model.dtype = "float32"
  c.batch.global_batch, c.batch.micro_batch, c.batch.eval_global_batch = 8, 8, 8
  c.drift.queue_size = 16
  c.mesh.shape, c.mesh.num_devices, c.mesh.param_sharding = mesh_shape, 8, param_sharding
  return c


def test_builder_placement_errors(tiny_model_config, monkeypatch):
  cfg = _step_config(tiny_model_config, (1, 2, 4), "fsdp")
  with pytest.raises(builder.TrainError, match="has tensor=4 but param_sharding='fsdp' "
                     "splits nothing over it") as e:
    builder.build_step(cfg)
  _one_line(e)
  cfg.mesh.param_sharding = "tensor"
  with pytest.raises(builder.TrainError, match="config.mesh.param_sharding must be one of"):
    builder.build_step(cfg)
  cfg.mesh.param_sharding = "rules"
  no_rules = dataclasses.replace(models.get_family("dit"), name="toy_without_rules",
                                 logical_axes=None)
  monkeypatch.setattr(builder.models, "family_of", lambda _: no_rules)
  with pytest.raises(builder.TrainError, match="param_sharding='rules' but model family "
                     "'toy_without_rules' defines no logical_axes") as e:
    builder.build_step(cfg)
  _one_line(e)


def test_rules_shardings_of_a_built_step(tiny_model_config):
  """build_step with "rules": the encoder is placed like the generator's params (its output
  layer, which it does not hold, as replicated placeholders) and the state's moments and
  EMA like the params (no compile: shardings only)."""
  parts = builder.build_step(_step_config(tiny_model_config, (1, 2, 4), "rules"))
  params = parts.state_shardings.params
  chex.assert_trees_all_equal_structs(parts.frozen_shardings, params)
  head = models.get_family("dit").head_keys
  assert head == ("output_layer",)
  assert {k: v for k, v in parts.frozen_shardings.items() if k not in head} == {
      k: v for k, v in params.items() if k not in head}
  assert all(s.spec == P() for s in jax.tree.leaves(parts.frozen_shardings["output_layer"]))
  assert parts.state_shardings.ema_params == params
  assert params["blocks"][0]["mlp"][0]["kernel"].spec == P("fsdp", "tensor")


# ------------------------------------------------------------------ activations


@pytest.mark.parametrize("names,shape,mesh_shape,rules,want", [
    (("batch", "residual_length", "embed"), (4, 16, 32), (1, 2, 4),
     sharding.REPLICATED_RESIDUAL_RULES, P("fsdp")),
    (("batch", "residual_length", "embed"), (8, 16, 32), (4, 2, 1), None,
     P(("data", "fsdp"))),
    # Only the axes whose product divides the dim: 2 rows over (data, fsdp) = (2, 2); 5
    # positions stay whole over tensor = 2.
    (("batch", "residual_length", "embed"), (2, 5, 32), (2, 2, 2), None, P("data")),
    (("batch", "length", "heads", "head_dim"), (4, 16, 8, 4), (1, 2, 4), None,
     P("fsdp", None, "tensor", None)),
    (("batch", "length", "mlp"), (4, 16, 6), (1, 2, 4), None, P("fsdp", None, None)),
    (("batch", "residual_length", "embed"), (4, 16, 32), (1, 2, 4), None,
     P("fsdp", "tensor", None)),
    # A name whose axis an earlier dim took stays whole.
    (("batch", "residual_length", "heads"), (4, 16, 8), (1, 2, 4), None,
     P("fsdp", "tensor", None)),
])
def test_activation_specs(names, shape, mesh_shape, rules, want):
  rules = sharding.ACTIVATION_RULES if rules is None else rules
  got = sharding.activation_spec(names, shape, _mesh(mesh_shape), rules)
  assert tuple(got) + (None,) * (len(shape) - len(got)) == tuple(want) + (None,) * (
      len(shape) - len(want))


def test_activation_names_are_checked():
  with pytest.raises(ValueError, match="no rule"):
    sharding.activation_spec(("batch", "width"), (4, 4), _mesh((1, 2, 4)))
  with pytest.raises(ValueError, match="do not match"):
    sharding.activation_spec(("batch",), (4, 4), _mesh((1, 2, 4)))


def _lowered_llada(mesh):
  """The tiny LLaDA's forward lowered with its activations placed on ``mesh``."""
  from tokendrift_jax.models import llada  # pylint: disable=import-outside-toplevel
  cfg = llada.LLaDAConfig(**llada.FAMILY.sizes["tiny"])
  gdef = models.graphdef(cfg)

  def forward(params, ids):
    with sharding.activation_mesh(mesh):
      return models.merge(gdef, params)(ids)

  ids = jax.ShapeDtypeStruct((4, 16), jnp.int32)
  return jax.jit(forward).lower(models.abstract_params(cfg), ids).as_text()


def test_blocks_constrain_activations_on_a_mesh_only():
  """On (1, 2, 4) the residual stream is split by rows over fsdp and by positions over
  tensor (sequence parallel), q/k/v, attention and the MLP hidden units by rows and by
  heads / units over tensor; on one device (or without a
  mesh) the program is the one lowered before activation sharding existed."""
  text = _lowered_llada(_mesh((1, 2, 4)))
  constraints = [line.split("<@mesh, ")[1].split(">")[0]
                 for line in text.splitlines() if "sdy.sharding_constraint" in line]
  # Per block: the residual 3 times, q and attention by heads, k and v (2 kv heads, which
  # 4 tensor shards do not divide) by rows only, the MLP hidden units; the logits.
  assert constraints.count('[{"fsdp"}, {"tensor"}, {}]') == 2 * 3
  assert constraints.count('[{"fsdp"}, {}, {"tensor"}, {}]') == 2 * 2
  assert constraints.count('[{"fsdp"}, {}, {}, {}]') == 2 * 2
  assert constraints.count('[{"fsdp"}, {}, {"tensor"}]') == 2 + 1
  assert len(constraints) == 2 * 8 + 1
  plain = _lowered_llada(None)
  assert "sharding_constraint" not in plain
  assert _lowered_llada(_mesh((1, 1, 1))) == plain
