"""perf/targets and compiling for them (perf/memory_plan, launch/plan_memory.py --target).

The programs a run executes, compiled by the accelerators' own compilers on this CPU-only
machine: XLA:TPU (libtpu) for a TPU topology and XLA:GPU (the CUDA plugin with XLA's H100
target description) for H100s, on compile-only devices. Both toolchains are pinned in
requirements-dev.txt, so nothing here is skipped when they are missing.

TPU: v5e:2x2, the smallest slice the compiler takes (one host of 4 chips, 16 GiB each).
GPU: 4 H100s, the same mesh. In the suite: a tiny LLaDA training step (continuation, no
remat, one micro-step) for the TPU, the MDLM sampler and the Gen-PPL judge's scoring for
both (through launch/plan_memory.py --program=sampler / judge, with the rows and the table
they write), LLaDA's guided sampler on XLA:CPU (on XLA:TPU: slow); the TokenDrift step (configs/llada_drift.py's settings) for the TPU and for the H100s
is slow (XLA:TPU takes 9-14 s of CPU for it, XLA:GPU 20-45 s on 2 cores).
"""

from __future__ import annotations

import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokendrift_jax import models
from tokendrift_jax.perf import memory_plan
from tokendrift_jax.perf import targets
from tokendrift_jax.perf import tpu_time
from tokendrift_jax.train import builder

TPU = "tpu:v5e:2x2"
GPU = "gpu:h100x4"
MESH = (1, 2, 2)


# ------------------------------------------------------------------------------ strings


@pytest.mark.parametrize("spec, devices, topology, kind", [
    ("tpu:v5p-16", 8, "v5p:2x2x2", "TPU v5"),       # v5p names count TensorCores
    ("tpu:v5p-8", 4, "v5p:2x2x1", "TPU v5"),
    ("tpu:v5p-128", 64, "v5p:4x4x4", "TPU v5"),
    ("tpu:v6e-8", 8, "v6e:2x4", "TPU v6 lite"),     # v5e/v6e names count chips
    ("tpu:v5litepod-16", 16, "v5e:4x4", "TPU v5 lite"),
    ("tpu:v4-8", 8, "v4:2x2x1", "TPU v4"),          # one compile-only device per core
    ("tpu:v5p:2x2x2", 8, "v5p:2x2x2", "TPU v5"),
    ("gpu:h100x8", 8, "1x1x8", "NVIDIA H100 80GB HBM3"),
    ("gpu:h200x16", 16, "1x2x8", "NVIDIA H200 141GB HBM3e"),
    ("cpu:8", 8, "", "cpu"),
])
def test_target_strings(spec, devices, topology, kind):
  t = targets.parse(spec)
  assert (t.num_devices, t.topology, t.device_kind) == (devices, topology, kind)


@pytest.mark.parametrize("spec, message", [
    ("v5p-16", "expected one of cpu:N"),
    ("tpu:v7-8", "unknown TPU generation 'v7'"),
    ("tpu:v5p-6", "power of two >= 4 chips"),
    ("tpu:v5p-7", "must be even"),
    ("tpu:v5p:2x", "must be AxB or AxBxC"),
    ("gpu:a100x8", "unknown GPU 'a100x8'"),
    ("gpu:h100x12", "give a multiple of 8"),
    ("cpu:0", "must be a positive integer"),
])
def test_bad_target_strings_are_one_line(spec, message):
  with pytest.raises(targets.TargetError, match=re.escape(message)) as e:
    targets.parse(spec)
  assert "\n" not in str(e.value)


def test_compile_only_devices():
  v5p = targets.parse("tpu:v5p-16").devices()
  # Two hosts of 4 chips: the builder splits a batch over both processes.
  assert len(v5p) == 8 and {d.device_kind for d in v5p} == {"TPU v5"}
  assert len({d.process_index for d in v5p}) == 2
  h100 = targets.parse("gpu:h100x8").devices()
  assert len(h100) == 8 and {d.device_kind for d in h100} == {"NVIDIA H100 80GB HBM3"}
  # The normal path is untouched: this process computes on CPU devices only, and libtpu's
  # quieting variables are gone once the topology is built (left set, TPU_WORKER_HOSTNAMES
  # made every later run in the process look like a TPU host to jax.distributed).
  assert {d.platform for d in jax.devices()} == {"cpu"}
  assert not {"TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE"} & set(os.environ)
  assert targets.cpu(8).devices() == jax.devices()[:8]


def test_gpu_figures_come_from_the_description():
  h100, h200 = targets.gpu_description("h100"), targets.gpu_description("h200")
  assert h100["device_memory_size"] == 84942979072
  assert h200["device_memory_size"] == 151397597184
  # NVIDIA's datasheet (H100 SXM, dense): 989.4 TFLOP/s bf16 tensor core, 66.9 TFLOP/s
  # fp32; the description's clocks and unit counts give them to 0.1 %.
  for info in (h100, h200):
    assert abs(info["bf16_flops"] / 989.4e12 - 1) < 1e-3, info
    assert abs(info["fp32_flops"] / 66.9e12 - 1) < 1e-3, info
  assert "collective_memory_granularity" not in targets.gpu_target_config("h100")


# ------------------------------------------------------------------------------ the step


def _padded_bytes(leaf, layout) -> int:
  """Bytes of one device's shard of ``leaf`` in XLA's ``layout``: each of the minor-most
  dims (in the layout's order) rounded up to the first tile's size (XLA:TPU stores arrays
  in (8, 128) tiles; a scalar or vector counts as one tile row). Written out here from the
  shape and the NamedSharding, not taken from memory_plan."""
  shape = list(leaf.sharding.shard_shape(leaf.shape))
  dims = [shape[i] for i in layout.major_to_minor]
  tile = layout.tiling[0] if layout.tiling else ()
  dims = [1] * max(0, len(tile) - len(dims)) + dims
  for j, size in enumerate(tile):
    i = len(dims) - len(tile) + j
    dims[i] = -(-dims[i] // size) * size
  return math.prod(dims) * np.dtype(leaf.dtype).itemsize


def _step_row(target_spec, tiny_llada_config, *, objective: str, remat: bool,
              global_batch: int):
  from configs import llada_drift  # pylint: disable=import-outside-toplevel
  cfg = llada_drift.get_config()
  cfg.model.update(tiny_llada_config().to_dict())
  kw = dict(mesh=MESH, micro_batch_per_shard=1, length=16, remat=remat, objective=objective,
            global_batch=global_batch)
  target = targets.parse(target_spec)
  row = memory_plan.plan(cfg, name="llada_drift", target=target, **kw)
  parts = builder.build_step(memory_plan.configure(cfg, **kw), devices=target.devices())
  return row, parts.abstract_args()


def _check_step(row, args, target_spec):
  assert not row.error and row.target == target_spec and row.devices == 4
  state, batch, encoder = args
  leaves = jax.tree.leaves((state, batch, encoder))
  layouts = [f.layout for f in jax.tree.leaves(row.compiled.input_formats[0],
                                               is_leaf=lambda x: hasattr(x, "layout"))]
  assert len(layouts) == len(leaves)
  # jit prunes the two arguments the TokenDrift step never reads (the frozen encoder's final
  # norm and output layer): no layout; every other argument reaches the program.
  pruned = set() if encoder is None else {
      id(x) for x in jax.tree.leaves((encoder["ln_f"], encoder["ff_out"]))}
  assert [lay is None for lay in layouts] == [id(x) in pruned for x in leaves]
  unpadded = sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
                 for x in leaves)
  assert row.held_bytes == unpadded
  expected = sum(_padded_bytes(x, lay) for x, lay in zip(leaves, layouts) if lay is not None)
  assert row.argument_bytes == expected
  # The donated state comes back in place; the compiler's temporaries are its own.
  assert 0 < row.alias_bytes <= row.output_bytes and row.temp_bytes > 0
  assert row.fits() == {target_spec: True}
  # No float64 anywhere: neither in the program as lowered (XLA:TPU rewrites float64 away,
  # so its compiled text alone would not show one) nor in the compiled one.
  assert not _float64_ops(row)
  print(memory_plan.format_row(row))
  return unpadded, expected


def _float64_ops(p) -> list[str]:
  """float64 / complex128 types in ``p``'s lowered StableHLO and compiled HLO."""
  lowered, compiled = p.lowered.as_text(), p.compiled.as_text()
  assert "xf32>" in lowered and "f32[" in compiled   # the patterns see types at all
  return (re.findall(r"[x<]f64>", lowered) + re.findall(r"\b(?:f64|c128)\[", compiled))


def test_float64_is_found_where_xla_tpu_hides_it():
  # The check's positive control: a float64 multiply in an float32 program. XLA:TPU's
  # compiled text has no f64 left, the lowered program has it.
  target = targets.parse(TPU)
  mesh = jax.sharding.Mesh(np.asarray(target.devices()[:1]), ("x",))
  x = jax.ShapeDtypeStruct((8, 128), jnp.float32,
                           sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

  def lowered(a):
    with jax.enable_x64(True):
      return jax.jit(lambda v: (v.astype(jnp.float64) * 3.0).astype(jnp.float32)).lower(a)

  p = memory_plan.compile_program(lowered, (x,), target)
  assert "f64" not in p.compiled.as_text()
  assert _float64_ops(p)


def _check_tpu_step(row, args):
  unpadded, padded = _check_step(row, args, TPU)
  # XLA:TPU's (8, 128) tiles pad the tiny model's 32-wide shards: the argument bytes are
  # the shards' bytes only after padding (at 8B widths the padding is negligible).
  assert padded > unpadded
  assert row.xla_flops > 0
  # XLA:TPU's own time is either a time or absent (it answers -1 for some programs, e.g.
  # this tiny step with activation sharding); the loop-aware estimate from its
  # per-instruction cycles is always there.
  assert row.optimal_seconds is None or row.optimal_seconds > 0
  assert tpu_time.step_estimate(row, targets.parse(TPU))["step_s"] > 0


def test_training_step_compiled_for_a_tpu(tiny_llada_config):
  # The short version: the continuation step (the same step function, optimizer, EMA and
  # finiteness check, without TokenDrift's encoder passes), no remat, one micro-step; about
  # 6 s of CPU, where the TokenDrift steps below take 9-14 s (XLA:TPU) and 20-45 s (XLA:GPU).
  row, args = _step_row(TPU, tiny_llada_config, objective="continuation", remat=False,
                        global_batch=2)
  _check_tpu_step(row, args)


@pytest.mark.slow
def test_tokendrift_step_compiled_for_a_tpu(tiny_llada_config):
  # configs/llada_drift.py's settings (remat) with two micro-steps.
  row, args = _step_row(TPU, tiny_llada_config, objective="drift", remat=True,
                        global_batch=4)
  _check_tpu_step(row, args)


@pytest.mark.slow
def test_tokendrift_step_compiled_for_h100s(tiny_llada_config):
  row, args = _step_row(GPU, tiny_llada_config, objective="drift", remat=True,
                        global_batch=4)
  unpadded, padded = _check_step(row, args, GPU)
  # XLA:GPU keeps arrays dense: the argument bytes are exactly the shards' bytes.
  encoder = args[2]
  assert padded == row.argument_bytes == unpadded - memory_plan.held_bytes(
      (encoder["ln_f"], encoder["ff_out"]))
  assert row.xla_peak_bytes > 0


# ------------------------------------------------------------------------------ sampler, judge


def _plan_memory_main():
  import runpy  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return runpy.run_path(os.path.join(root, "launch", "plan_memory.py"))["main"]


def _tiny_config_file(path, module: str, fields: dict) -> str:
  """A config file: configs/<module>.py with the model fields ``fields`` (a tiny model)."""
  path.write_text(f"from configs import {module}\n\n\ndef get_config():\n"
                  f"  c = {module}.get_config()\n  c.model.update({fields!r})\n  return c\n",
                  encoding="utf-8")
  return str(path)


# The shape of the suite's tiny judge (tiny_gpt2_judge: vocabulary 320 with EOS 319,
# context 32, 2 layers of width 32): only the shapes are compiled, no weights are needed.
_TINY_JUDGE = dict(vocab_size=320, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                   bos_token_id=319, eos_token_id=319)


@pytest.mark.parametrize("target_spec", [TPU, GPU])
def test_sampler_and_judge_compiled_for(target_spec, tiny_model_config, tmp_path, monkeypatch,
                                        capsys):
  """launch/plan_memory.py --program=sampler (a tiny MDLM config) and --program=judge (the
  tiny judge's shape) compiled for a TPU / GPU target: the rows they append, and their
  table beside an old step row of docs/scaling/targets.jsonl."""
  import json  # pylint: disable=import-outside-toplevel
  target = targets.parse(target_spec)
  model_cfg = tiny_model_config("mdlm")
  config = _tiny_config_file(tmp_path / "tiny_mdlm.py", "mdlm_drift", model_cfg.to_dict())
  out = tmp_path / "rows.jsonl"
  main = _plan_memory_main()
  assert main(["--program=sampler", f"--config={config}", f"--target={target_spec}",
               "--mesh=4,1,1", "--batch=8", f"--out={out}"]) == 0
  monkeypatch.setitem(memory_plan.JUDGE_SHAPES, "tiny", _TINY_JUDGE)
  assert main(["--program=judge", "--judge=tiny", f"--target={target_spec}", "--mesh=4,1,1",
               "--batch=8", f"--out={out}"]) == 0
  printed = capsys.readouterr().out
  assert "mdlm sampler (tiny_mdlm.py, batch 8" in printed and "tiny judge (batch 8" in printed
  sampler, judge = [json.loads(line) for line in out.read_text().splitlines()]
  assert (sampler["program"], sampler["process"], sampler["batch"], sampler["length"],
          sampler["prompt_length"], sampler["options"]) == ("sampler", "mdlm", 8,
                                                            model_cfg.length, 0, {})
  assert (judge["program"], judge["judge"], judge["length"], judge["dtype"]) == (
      "judge", "tiny", 32, "float32")
  for p in (sampler, judge):
    assert not p["error"] and p["fits"] == {target_spec: True} and p["temp_bytes"] is not None
    assert p["device_kind"] == target.device_kind and p["hbm_bytes"] == target.hbm_bytes
    assert p["argument_bytes"] >= p["held_bytes"] > 0
    assert (p["optimal_seconds"] is not None) == (target.platform == "tpu")
    assert p["peak_bytes"] == (p["held_bytes"] + p["temp_bytes"] + p["output_bytes"]
                               - p["alias_bytes"])
    assert p["command"].startswith("python launch/plan_memory.py --program=")
  # Replicated parameters: each device holds the whole backbone (float32).
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(
      models.abstract_params(model_cfg)))
  assert sampler["held_bytes"] >= 4 * n_params
  # The table of a file with both kinds of rows: the steps', then the programs'.
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with open(os.path.join(root, "docs", "scaling", "targets.jsonl"), encoding="utf-8") as f:
    step = json.loads(f.readline())
  assert "program" not in step   # rows written before --program: steps
  steps_table, programs_table = memory_plan.markdown_file([step, sampler, judge]).split("\n\n")
  assert steps_table == memory_plan.markdown_targets([step])
  lines = programs_table.splitlines()
  assert len(lines) == 4 and lines[0].startswith("| program | config | process / judge |")
  assert lines[2].startswith(f"| sampler | tiny_mdlm | mdlm | {target_spec} | (4, 1, 1) | 8 | "
                             f"{model_cfg.length} | float32 | - |")
  assert lines[3].startswith(f"| judge | - | tiny | {target_spec} | (4, 1, 1) | 8 | 32 | "
                             f"float32 | - |")


# ------------------------------------------------------------------------------ too large


@pytest.mark.parametrize("target_spec", [TPU, GPU])
def test_a_program_larger_than_the_card_does_not_fit(target_spec):
  target = targets.parse(target_spec)
  mesh = jax.sharding.Mesh(np.asarray(target.devices()).reshape(-1), ("x",))
  # Per device: a 12 GiB argument and a 12 GiB result = 24 GiB > the v5e's 16 GiB;
  # 48 + 48 GiB > the H100's 79.1 GiB.
  per_device = (12 if target.platform == "tpu" else 48) * 2 ** 30
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
  x = jax.ShapeDtypeStruct((target.num_devices * per_device // 4,), jnp.float32, sharding=split)
  p = memory_plan.compile_program(jax.jit(lambda a: a * 2 + 1).lower, (x,), target)
  assert p.held_bytes == per_device
  assert p.fits_target is False
  if target.platform == "tpu":
    # XLA:TPU refuses it at compile time; the planner reports the compiler's reason.
    assert "memory" in p.error.lower() and p.temp_bytes is None
  else:
    # XLA:GPU compiles it; the planner compares its peak with the card.
    assert not p.error and p.peak_bytes >= 2 * per_device > target.hbm_bytes
  assert "does NOT fit" in memory_plan.format_program("x", p)


# ------------------------------------------------------------------------------ the CLI


@pytest.mark.parametrize("args, message", [
    (["--target=tpu:v7-8"], "error: --target 'tpu:v7-8': unknown TPU generation 'v7'"),
    (["--target=gpu:h100x8", "--devices=8"], "error: give one of --target"),
    ([], "error: give one of --target"),
    (["--target=tpu:v5p-16", "--mesh=1,2,2"], "--mesh (1, 2, 2) needs 4 devices, --target "
                                               "tpu:v5p-16 has 8"),
])
def test_plan_memory_refuses_in_one_line(args, message, capsys):
  main = _plan_memory_main()
  argv = ["--config=configs/llada_drift.py"] + (
      args if any(a.startswith("--mesh") for a in args) else args + ["--mesh=1,2,4"])
  assert main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err, err


# ------------------------------------------------------------------------------ the CLI: sampler, judge


_LLADA = ["--config=configs/llada_drift.py", "--target=tpu:v5p-8", "--mesh=4,1,1"]


@pytest.mark.parametrize("args, message", [
    (_LLADA + ["--batch=8"], "--batch applies to --program=sampler / judge, not --program=step"),
    (["--program=sampler", "--batch=8", "--micro-batch=2"] + _LLADA,
     "--micro-batch applies to --program=step, not --program=sampler"),
    (["--program=judge", "--batch=8"] + _LLADA,
     "--config applies to --program=step / sampler, not --program=judge"),
    (["--program=sampler", "--batch=8", "--judge=gpt2-large"] + _LLADA,
     "--judge applies to --program=judge, not --program=sampler"),
    (["--program=judge", "--target=tpu:v5p-8", "--mesh=4,1,1"],
     "--program=judge needs --batch"),
    (["--program=sampler", "--target=tpu:v5p-8", "--mesh=4,1,1", "--batch=8"],
     "--program=sampler needs --config"),
    (["--program=sampler", "--batch=0"] + _LLADA, "--batch=0: give an integer >= 1"),
    (["--program=sampler", "--batch=8", "--cfg-scale=2"] + _LLADA,
     "--cfg-scale=2.0 guides by the prompt: give --prompt-length"),
    (["--program=sampler", "--batch=8", "--cfg-scale=-1", "--prompt-length=8"] + _LLADA,
     "--cfg-scale=-1.0: give a number >= 0"),
    (["--program=sampler", "--batch=6"] + _LLADA,
     "--batch=6 must divide over the mesh's data x fsdp = 4 batch shards"),
    (["--program=sampler", "--batch=8", "--block-length=64", "--prompt-length=24"] + _LLADA,
     "--block-length=64 must divide the generated length 1000"),
    (["--program=sampler", "--batch=8", "--prompt-length=1024"] + _LLADA,
     "--prompt-length=1024 must be below the sequence length 1024"),
    (["--program=sampler", "--batch=8", "--block-length=64", "--config=configs/mdlm_drift.py",
      "--target=tpu:v5p-8", "--mesh=4,1,1"],
     "--block-length is an option of LLaDA's sampler; configs/mdlm_drift.py's "
     "diffusion.process is 'mdlm'"),
    (["--program=judge", "--batch=8", "--length=2048", "--target=gpu:h100x4", "--mesh=4,1,1"],
     "--length=2048: the judge's context is at most 1024 tokens"),
    (["--program=judge", "--batch=8", "--judge=gpt2-xl", "--target=gpu:h100x4", "--mesh=4,1,1"],
     "--judge='gpt2-xl': shapes known: ['gpt2-large']"),
])
def test_plan_memory_sampler_and_judge_flags_refused_in_one_line(args, message, capsys):
  assert _plan_memory_main()(args) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and message in err, err


def test_prompted_sampler_refused_where_it_does_not_apply(tiny_model_config,
                                                          tiny_llada_config):
  """memory_plan.plan_sampler's prompt_length checks (nothing is compiled)."""
  from tokendrift_jax.diffusion import make_process_for_model  # pylint: disable=import-outside-toplevel
  target = targets.parse(TPU)
  mdlm = tiny_model_config("mdlm")
  with pytest.raises(ValueError, match="process 'mdlm' has no prompt-conditioned sampler"):
    memory_plan.plan_sampler(mdlm, make_process_for_model("mdlm", mdlm), target=target,
                             mesh=(4, 1, 1), batch=4, prompt_length=8)
  llada = tiny_llada_config()
  with pytest.raises(ValueError, match=r"prompt_length=16 must be in \[1, length - 1\] for "
                                       r"length=16"):
    memory_plan.plan_sampler(llada, make_process_for_model("llada", llada), target=target,
                             mesh=(4, 1, 1), batch=4, prompt_length=16, cfg_scale=1.0)


def test_plan_memory_refuses_cudnn_attention_in_one_line(tiny_llada_config, tmp_path, capsys):
  # JAX's cuDNN attention asks for the library while tracing (no compile happens).
  config = _tiny_config_file(tmp_path / "tiny_llada.py", "llada_drift",
                             tiny_llada_config().to_dict())
  assert _plan_memory_main()([f"--config={config}", f"--target={GPU}", "--mesh=4,1,1",
                              "--length=16", "--global-batch=4", "--no-remat",
                              "--attention-impl=cudnn"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--attention-impl" in err and "cuDNN" in err, err
  assert "plan with --attention-impl=xla" in err


@pytest.mark.parametrize("target_spec", [
    "cpu:1",   # XLA:CPU, one device: 3-7 s on 2 busy cores
    pytest.param(TPU, marks=pytest.mark.slow),   # 4 s (the TPU compile of this file is the
                                                 # MDLM sampler's above)
])
def test_plan_memory_llada_guided_sampler(target_spec, tiny_llada_config, tmp_path):
  """--program=sampler --prompt-length --cfg-scale on a (tiny) LLaDA config: the prompted
  generate.py sampler with classifier-free guidance, whose backbone calls run 2 x batch rows
  of prompt + completion tokens."""
  import json  # pylint: disable=import-outside-toplevel
  llada = tiny_llada_config()
  config = _tiny_config_file(tmp_path / "tiny_llada.py", "llada_drift", llada.to_dict())
  out, hlo = tmp_path / "rows.jsonl", tmp_path / "sampler.hlo"
  devices = targets.parse(target_spec).num_devices
  assert _plan_memory_main()([
      "--program=sampler", f"--config={config}", f"--target={target_spec}",
      f"--mesh={devices},1,1", "--batch=4", "--prompt-length=8", "--cfg-scale=1",
      "--block-length=4", "--param-sharding=rules", f"--out={out}",
      f"--hlo-out={hlo}"]) == 0
  (row,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert (row["process"], row["batch"], row["length"], row["prompt_length"], row["options"],
          row["param_sharding"]) == ("llada", 4, llada.length, 8,
                                     {"block_length": 4, "cfg_scale": 1.0}, "rules")
  assert not row["error"] and row["peak_bytes"] > row["held_bytes"] > 0
  # Guided and unguided rows in one call: logits [batch, 2, L, V] (the batch shard of each
  # device).
  assert re.search(rf"f32\[{4 // devices},2,{llada.length},{llada.vocab_size}\]",
                   hlo.read_text())
