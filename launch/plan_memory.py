"""Compiles one training step for a target and prints its per-device memory.

  python launch/plan_memory.py --config=configs/llada_drift.py --target=gpu:h100x8 \
      --mesh=1,2,4 --micro-batch=1 --length=1024 --remat

``--target``: ``cpu:N`` (N simulated CPU devices, XLA:CPU; ``--devices=N`` is the same),
``tpu:v5p-16`` (a Cloud TPU slice name; ``tpu:v5p:2x2x2`` a topology; XLA:TPU from libtpu)
or ``gpu:h100x8`` / ``gpu:h200x8`` (XLA:GPU from the CUDA plugin), see
``tokendrift_jax/perf/targets.py``. TPU and GPU targets compile on this machine without the
accelerator (compile-only devices). One row of docs/SCALING.md per command: parameters are
shape structs (nothing is allocated), the step is ``train/builder.build_step``'s on the
target's devices (``tokendrift_jax/perf/memory_plan.py``). Prints per-device memory, whether
it fits the target's memory, the compile time and, for TPU, XLA:TPU's cost-model
``optimal_seconds``; with ``--time`` (TPU) the step time from that cost model with the loops'
trip counts applied, the estimated MFU and the paper budget in chip-hours
(``tokendrift_jax/perf/tpu_time.py``). ``--out FILE`` appends the row as a JSON line.

``--program=sampler`` compiles instead the config's diffusion sampler (its
``diffusion.process``: MDLM, DUO, LLaDA's generate.py) for ``--batch`` samples (over all
devices, the evaluation's ``batch``) of the config's ``model.length`` (or ``--length``),
as ``launch/eval.py`` builds it (backbone at ``--model-dtype``, parameters placed by
``--param-sharding``); LLaDA takes ``--block-length`` and, for classifier-free guidance,
``--cfg-scale`` with ``--prompt-length`` (guidance needs a prompt: the prompted sampler,
2 x batch rows per backbone call). ``--program=judge`` compiles the Gen-PPL judge's
scoring of ``--batch`` chunks of ``--length`` (default its context, 1024) tokens for GPT-2
Large's shape (``--judge``; no weights needed). Their rows carry ``program``; the step's
rows are unchanged.

  python launch/plan_memory.py --program=sampler --config=configs/llada_drift.py \
      --target=gpu:h100x8 --mesh=8,1,1 --batch=8 --param-sharding=rules
  python launch/plan_memory.py --program=judge --target=tpu:v5p-8 --mesh=4,1,1 --batch=32
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _mesh(text: str) -> tuple[int, ...]:
  try:
    mesh = tuple(int(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"--mesh {text!r}: give data,fsdp,tensor sizes") from None
  if len(mesh) != 3 or min(mesh) < 1:
    raise argparse.ArgumentTypeError(f"--mesh {text!r}: three sizes >= 1 (data,fsdp,tensor)")
  return mesh


def main(argv=None) -> int:
  # Importing JAX does not start its backend; the device count is set below, before that.
  from tokendrift_jax import objectives  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--program", choices=PROGRAMS, default="step",
                 help="what to compile: the training step (default), the config's diffusion "
                      "sampler, or the Gen-PPL judge (GPT-2 Large's shape)")
  p.add_argument("--config", default="",
                 help="a training config file (configs/*.py); step and sampler")
  p.add_argument("--target", default="",
                  help="cpu:N | tpu:<v4|v5p|v5e|v6e>-<n> | tpu:<gen>:<AxBxC> | "
                       "gpu:<h100|h200>x<n>")
  p.add_argument("--devices", type=int, default=0,
                 help="N simulated CPU devices (the same as --target=cpu:N)")
  p.add_argument("--mesh", type=_mesh, required=True, help="data,fsdp,tensor")
  p.add_argument("--micro-batch", type=int, default=None,
                 help="step: sequences per batch shard (default 1)")
  p.add_argument("--length", type=int, default=None,
                 help="tokens per sequence: step 1024, sampler the config's model.length, "
                      "judge 1024 (GPT-2's context) by default")
  p.add_argument("--remat", action=argparse.BooleanOptionalAction, default=None,
                 help="step: rematerialise the blocks (default on)")
  p.add_argument("--remat-policy", default=None,
                 help="a jax.checkpoint_policies name ('' = save nothing); default: the "
                      "config's")
  p.add_argument("--scan-layers", action=argparse.BooleanOptionalAction, default=None,
                 help="scan the blocks (default: the config's model.scan_layers)")
  p.add_argument("--time", action="store_true",
                 help="TPU targets: the step time from XLA:TPU's cost model with loop trip "
                      "counts (perf/tpu_time.py), MFU and the paper budget's chip-hours")
  p.add_argument("--hlo-out", default="", help="write the compiled program's HLO text here")
  p.add_argument("--objective", choices=objectives.names(), default=None)
  p.add_argument("--global-batch", type=int, default=None,
                 help="step: sequences per optimizer step (default the paper's 512)")
  p.add_argument("--attention-impl", default=None, choices=("xla", "cudnn", "auto"),
                 help="step: config.model.attention_impl (default: the config's)")
  p.add_argument("--batch", type=int, default=None,
                 help="sampler / judge: samples (chunks) per call over all devices")
  p.add_argument("--model-dtype", choices=("float32", "bfloat16"), default=None,
                 help="sampler / judge: compute dtype of the backbone / GPT-2 (default "
                      "float32, as configs/eval.py's model_dtype and judge_dtype)")
  p.add_argument("--param-sharding", choices=("replicated", "fsdp", "rules"), default=None,
                 help="sampler: how the backbone's parameters are placed (default "
                      "replicated, as configs/eval.py)")
  p.add_argument("--block-length", type=int, default=None,
                 help="sampler, LLaDA: generate.py's block length (default one block)")
  p.add_argument("--cfg-scale", type=float, default=None,
                 help="sampler, LLaDA: classifier-free guidance scale (> 0 needs "
                      "--prompt-length)")
  p.add_argument("--prompt-length", type=int, default=None,
                 help="sampler, LLaDA: complete prompts of this many tokens (of --length)")
  p.add_argument("--judge", default=None,
                 help="judge: whose shape (default gpt2-large, the paper's judge; the names "
                      "of tokendrift_jax/perf/memory_plan.JUDGE_SHAPES)")
  p.add_argument("--out", default="", help="append the row to this JSON-lines file")
  args = p.parse_args(argv)
  problem = _check_program_flags(args)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  from tokendrift_jax.perf import targets  # pylint: disable=import-outside-toplevel
  if bool(args.target) == bool(args.devices):
    print("error: give one of --target (cpu:N, tpu:v5p-16, gpu:h100x8, ...) and --devices=N",
          file=sys.stderr)
    return 2
  try:
    target = targets.parse(args.target) if args.target else targets.cpu(args.devices)
  except targets.TargetError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.time and target.platform != "tpu":
    print(f"error: --time reads XLA:TPU's cost model: give a TPU target, not {target.spec}",
          file=sys.stderr)
    return 2
  needed = args.mesh[0] * args.mesh[1] * args.mesh[2]
  if needed != target.num_devices:
    print(f"error: --mesh {args.mesh} needs {needed} devices, --target {target.spec} has "
          f"{target.num_devices}", file=sys.stderr)
    return 2
  # Before JAX initialises its backend: CPU is the only backend started (the TPU/GPU
  # compilers work on compile-only devices; with libtpu or the CUDA plugin installed JAX
  # would otherwise try to start a TPU and a GPU), with enough devices for a cpu:N target.
  # JAX has read JAX_PLATFORMS when it was imported (above), so its config is set too.
  import jax  # pylint: disable=import-outside-toplevel
  os.environ["JAX_PLATFORMS"] = "cpu"
  jax.config.update("jax_platforms", "cpu")
  if target.platform == "cpu":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_"
                               f"platform_device_count={target.num_devices}")
  from ml_collections.config_flags import config_flags  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.perf import memory_plan  # pylint: disable=import-outside-toplevel
  config = (config_flags.ConfigFileFlagParser("config", lock_config=False).parse(args.config)
            if args.config else None)
  if args.program != "step":
    return _plan_program(args, argv, config, target, memory_plan)
  if args.attention_impl is not None:
    config.model.attention_impl = args.attention_impl
  print(target.describe(), flush=True)
  try:
    row = memory_plan.plan(config, name=os.path.basename(args.config), mesh=args.mesh,
                           micro_batch_per_shard=args.micro_batch or 1,
                           length=args.length or 1024,
                           remat=True if args.remat is None else args.remat,
                           objective=args.objective or config.objective,
                           global_batch=args.global_batch or 512, target=target,
                           remat_policy=args.remat_policy, scan_layers=args.scan_layers)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except RuntimeError as e:
    # jax.nn.dot_product_attention(implementation="cudnn") asks the cuDNN library for its
    # version while tracing; compile-only GPU devices come without it.
    if "cuDNN" not in str(e):
      raise
    print(f"error: --attention-impl / config.model.attention_impl="
          f"{config.model.attention_impl!r}: {str(e).strip().splitlines()[0]} (JAX's cuDNN "
          f"attention needs the library while tracing, which a compile-only {target.spec} "
          f"does not load); plan with --attention-impl=xla", file=sys.stderr)
    return 2
  print(memory_plan.format_row(row))
  extra = {}
  if args.hlo_out and row.compiled is not None:
    with open(args.hlo_out, "w", encoding="utf-8") as f:
      f.write(row.compiled.as_text())
  if args.time and not row.error:
    from tokendrift_jax.perf import tpu_time  # pylint: disable=import-outside-toplevel
    extra["time"] = tpu_time.step_estimate(row, target)
    print(tpu_time.format_estimate(extra["time"]))
  if args.out:
    with open(args.out, "a", encoding="utf-8") as f:
      f.write(json.dumps({**row.to_dict(), **extra, "command": " ".join(["python launch/plan_memory.py"]
                                                                + (argv or sys.argv[1:]))})
              + "\n")
  return 0


PROGRAMS = ("step", "sampler", "judge")
# The flags each program reads (a flag given to a program that does not read it is an
# error, not silently ignored). --target/--devices/--mesh/--hlo-out/--out serve all.
_FLAGS = {
    "config": ("step", "sampler"), "micro_batch": ("step",), "remat": ("step",),
    "remat_policy": ("step",), "scan_layers": ("step",), "time": ("step",),
    "objective": ("step",), "global_batch": ("step",), "attention_impl": ("step",),
    "batch": ("sampler", "judge"), "model_dtype": ("sampler", "judge"),
    "param_sharding": ("sampler",), "block_length": ("sampler",),
    "cfg_scale": ("sampler",), "prompt_length": ("sampler",), "judge": ("judge",),
}
_DEFAULT_OFF = {"config": "", "time": False}


def _check_program_flags(args) -> str:
  """The first problem with the flags given for ``--program`` (one line), or ''."""
  for name, programs in _FLAGS.items():
    value = getattr(args, name)
    given = value != _DEFAULT_OFF.get(name) if name in _DEFAULT_OFF else value is not None
    if given and args.program not in programs:
      return (f"--{name.replace('_', '-')} applies to --program="
              f"{' / '.join(programs)}, not --program={args.program}")
  if args.program in ("step", "sampler") and not args.config:
    return f"--program={args.program} needs --config (a training config, configs/*.py)"
  if args.program == "step":
    for name in ("micro_batch", "global_batch", "length"):
      value = getattr(args, name)
      if value is not None and value < 1:
        return f"--{name.replace('_', '-')}={value}: give an integer >= 1"
    return ""
  if args.batch is None:
    return (f"--program={args.program} needs --batch (samples{' / chunks' if args.program == 'judge' else ''} "
            f"per call over all devices)")
  for name in ("batch", "length", "block_length"):
    value = getattr(args, name)
    if value is not None and value < 1:
      return f"--{name.replace('_', '-')}={value}: give an integer >= 1"
  if args.prompt_length is not None and args.prompt_length < 1:
    return f"--prompt-length={args.prompt_length}: give an integer >= 1 (or leave it out)"
  if args.cfg_scale is not None:
    if not args.cfg_scale >= 0:
      return f"--cfg-scale={args.cfg_scale}: give a number >= 0 (0 = no guidance)"
    if args.cfg_scale > 0 and not args.prompt_length:
      return (f"--cfg-scale={args.cfg_scale} guides by the prompt: give --prompt-length "
              f"(unconditional samples have none)")
  return ""


def _plan_program(args, argv, config, target, memory_plan) -> int:
  """--program=sampler / judge: compiles it, prints its line, appends its row."""
  batch_shards = args.mesh[0] * args.mesh[1]
  if args.batch % batch_shards:
    print(f"error: --batch={args.batch} must divide over the mesh's data x fsdp = "
          f"{batch_shards} batch shards (--mesh {args.mesh})", file=sys.stderr)
    return 2
  dtype = args.model_dtype or "float32"
  if args.program == "sampler":
    process = str(config.diffusion.process)
    length = int(args.length or config.model.length)
    llada = {k: v for k, v in (("block_length", args.block_length), ("cfg_scale", args.cfg_scale))
             if v is not None}
    for k in [*llada, *(["prompt_length"] if args.prompt_length else [])]:
      if process != "llada":
        print(f"error: --{k.replace('_', '-')} is an option of LLaDA's sampler; "
              f"{args.config}'s diffusion.process is {process!r}", file=sys.stderr)
        return 2
    prompt = int(args.prompt_length or 0)
    if prompt >= length:
      print(f"error: --prompt-length={prompt} must be below the sequence length {length} "
            f"(--length or the config's model.length)", file=sys.stderr)
      return 2
    if args.block_length is not None and (length - prompt) % args.block_length:
      print(f"error: --block-length={args.block_length} must divide the generated length "
            f"{length - prompt} (--length {length} less --prompt-length {prompt})",
            file=sys.stderr)
      return 2
    settings = dict(config=os.path.basename(args.config), process=process,
                    mesh=list(args.mesh), batch=args.batch, length=length, dtype=dtype,
                    param_sharding=args.param_sharding or "replicated",
                    prompt_length=prompt, options=llada)
  else:
    judge = args.judge or "gpt2-large"
    if judge not in memory_plan.JUDGE_SHAPES:
      print(f"error: --judge={judge!r}: shapes known: {sorted(memory_plan.JUDGE_SHAPES)}",
            file=sys.stderr)
      return 2
    length = int(args.length or memory_plan.JUDGE_SHAPES[judge]["n_positions"])
    if length > memory_plan.JUDGE_SHAPES[judge]["n_positions"]:
      print(f"error: --length={length}: the judge's context is at most "
            f"{memory_plan.JUDGE_SHAPES[judge]['n_positions']} tokens", file=sys.stderr)
      return 2
    settings = dict(config=None, judge=judge, mesh=list(args.mesh), batch=args.batch,
                    length=length, dtype=dtype, options={})
  print(target.describe(), flush=True)
  try:
    if args.program == "sampler":
      program, _ = memory_plan.plan_config_sampler(
          config, target=target, mesh=args.mesh, batch=args.batch, length=length,
          model_dtype=dtype, param_sharding=settings["param_sharding"],
          prompt_length=prompt, **llada)
      what = f"{settings['process']} sampler ({settings['config']}, batch {args.batch}, L={length})"
    else:
      program = memory_plan.plan_judge(memory_plan.judge_shape(judge), target=target,
                                       mesh=args.mesh, batch=args.batch, context=length,
                                       dtype=dtype)
      what = f"{judge} judge (batch {args.batch}, context {length}, {dtype})"
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(memory_plan.format_program(what, program))
  if args.hlo_out and program.compiled is not None:
    with open(args.hlo_out, "w", encoding="utf-8") as f:
      f.write(program.compiled.as_text())
  if args.out:
    row = memory_plan.program_row(args.program, program, **settings)
    with open(args.out, "a", encoding="utf-8") as f:
      f.write(json.dumps({**row, "command": " ".join(["python launch/plan_memory.py"]
                                                     + (argv or sys.argv[1:]))}) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
