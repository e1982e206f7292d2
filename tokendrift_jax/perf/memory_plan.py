"""Per-device memory of a training step, a sampler or the judge, measured by compiling it
for a target (``perf/targets.py``): simulated CPU devices, a TPU slice, N GPUs.

Nothing is allocated: the step of ``train/builder.build_step`` (on the target's devices) is
lowered with the ShapeDtypeStructs (with shardings) of its arguments
(``StepParts.abstract_args``) and compiled; XLA's ``memory_analysis`` of the compiled step
gives the bytes every device holds (arguments: parameters, Adam moments, EMA, queues, the
batch and the frozen encoder; outputs, aliased with the donated state; temporaries:
activations, gradients, collectives' buffers). The step's FLOPs are the model's analytic
count (:func:`perf.flops.step_flops`); XLA's ``cost_analysis`` is kept in the row
(``xla_flops``; XLA:TPU's also ``optimal_seconds``) but counts a loop body (the micro-step
scan, the layer scan) once, so it is not the step's.

For a TPU or GPU target the compiler is the accelerator's own (XLA:TPU from libtpu, XLA:GPU
from the CUDA plugin) compiling for compile-only devices, so the temporaries are that
compiler's. For ``cpu:N`` the program is XLA:CPU's, which fuses and schedules differently:
its temporaries are an estimate of the same order, not a bound (docs/SCALING.md). The CPU
device count must be fixed before JAX starts, so one row = one process:
``launch/plan_memory.py`` sets ``--xla_force_host_platform_device_count`` and calls
:func:`plan`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ml_collections

GIB = 2 ** 30
# Usable HBM per device of the kinds the CPU-compiled rows are compared with (a target with
# a memory of its own, perf/targets.py, is compared with that instead).
DEVICE_GB = {"H100 (80 GB)": 80, "H200 (141 GB)": 141, "TPU v5p (95 GB)": 95}


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
  """What XLA says one compiled program needs per device, for one target.

  ``held_bytes``: what one device holds of the program's arguments, from their shardings.
  ``argument_bytes`` .. ``temp_bytes``: XLA's ``memory_analysis`` (None when the compiler
  refused the program, XLA:TPU's "Ran out of memory": ``error`` says why).
  ``xla_peak_bytes``: XLA:GPU's own ``peak_memory_in_bytes`` (None elsewhere).
  ``optimal_seconds``: XLA:TPU's cost-model time (None elsewhere); it counts a loop body
  once. ``xla_flops``: the cost analysis's FLOPs (None for XLA:GPU, which gives none).
  ``hbm_bytes``: the target's memory per device (None for CPU).
  """
  target: str
  device_kind: str
  devices: int
  hbm_bytes: int | None
  held_bytes: int
  argument_bytes: int | None
  output_bytes: int | None
  alias_bytes: int | None
  temp_bytes: int | None
  xla_peak_bytes: int | None
  optimal_seconds: float | None
  xla_flops: float | None
  compile_s: float
  error: str = ""
  # The program as lowered (StableHLO, before XLA's passes) and as compiled (its HLO
  # text, layouts); not part of the row. XLA:TPU rewrites float64 arithmetic away, so a
  # float64 op is visible in ``lowered`` only.
  lowered: Any = dataclasses.field(default=None, repr=False, compare=False)
  compiled: Any = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def peak_bytes(self) -> int | None:
    """Held arguments + temporaries + outputs not aliased to (donated) arguments."""
    if self.temp_bytes is None:
      return None
    return self.held_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

  @property
  def fits_target(self) -> bool | None:
    """Whether the peak fits the target's memory: False when the compiler ran out of it,
    None for a CPU target (no device memory to compare with)."""
    if self.error:
      return False
    if self.hbm_bytes is None:
      return None
    return self.peak_bytes <= self.hbm_bytes


# XLA:TPU refuses a program larger than the chip's HBM at compile time; XLA:GPU and XLA:CPU
# compile it and report its size (compared with the memory here).
_OUT_OF_MEMORY = ("RESOURCE_EXHAUSTED", "Ran out of memory")


def compile_program(lowered_fn, args: tuple, target) -> ProgramMemory:
  """Compiles ``lowered_fn(*args)`` (a function returning jit's ``Lowered``) and reads
  XLA's analyses. ``args``: ShapeDtypeStructs with shardings on ``target``'s devices."""
  # pylint: disable=import-outside-toplevel
  import jax
  t0 = time.perf_counter()
  lowered = lowered_fn(*args)
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    if not any(m in str(e) for m in _OUT_OF_MEMORY):
      raise
    return ProgramMemory(
        target=target.spec, device_kind=target.device_kind, devices=target.num_devices,
        hbm_bytes=target.hbm_bytes, held_bytes=held_bytes(args), argument_bytes=None,
        output_bytes=None, alias_bytes=None, temp_bytes=None, xla_peak_bytes=None,
        optimal_seconds=None, xla_flops=None, compile_s=time.perf_counter() - t0,
        error=str(e).strip().splitlines()[0], lowered=lowered)
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  cost = cost or {}
  peak = getattr(mem, "peak_memory_in_bytes", None)
  return ProgramMemory(
      target=target.spec, device_kind=target.device_kind, devices=target.num_devices,
      hbm_bytes=target.hbm_bytes, held_bytes=held_bytes(args),
      argument_bytes=int(mem.argument_size_in_bytes),
      output_bytes=int(mem.output_size_in_bytes), alias_bytes=int(mem.alias_size_in_bytes),
      temp_bytes=int(mem.temp_size_in_bytes),
      xla_peak_bytes=int(peak) if peak and target.platform == "gpu" else None,
      optimal_seconds=_optimal_seconds(cost),
      xla_flops=float(cost["flops"]) if "flops" in cost else None, compile_s=compile_s,
      lowered=lowered, compiled=compiled)


def _optimal_seconds(cost: dict) -> float | None:
  """XLA:TPU's cost-model time, or None where it gives none: it answers -1 for programs
  its model cannot price (seen for the tiny LLaDA step with activation sharding on a
  (1, 2, 2) mesh; the 8B steps are priced), which must not reach a table as a time."""
  value = cost.get("optimal_seconds")
  return float(value) if value is not None and float(value) >= 0 else None


@dataclasses.dataclass(frozen=True)
class MemoryRow:
  """One compiled training step: settings, per-device bytes, FLOPs and compile time.

  ``held_bytes``: what one device holds of the step's arguments (state, batch, frozen
  encoder), from their shardings. ``argument_bytes``: what the compiled program takes, which
  is less when jit prunes an argument the step never reads (rows compiled before the frozen
  encoder stopped holding its output layer, ``objectives.tokendrift.drop_head``, show that
  layer here), though the caller still holds it.
  The fields from ``target`` on are :class:`ProgramMemory`'s (None: see there).
  """
  config: str
  objective: str
  devices: int
  mesh: tuple[int, ...]
  micro_batch_per_shard: int
  length: int
  remat: bool
  remat_policy: str
  global_batch: int
  micro_steps: int
  held_bytes: int
  argument_bytes: int | None
  output_bytes: int | None
  alias_bytes: int | None
  temp_bytes: int | None
  xla_flops: float | None
  analytic_flops: float
  compile_s: float
  target: str = ""
  device_kind: str = ""
  hbm_bytes: int | None = None
  xla_peak_bytes: int | None = None
  optimal_seconds: float | None = None
  error: str = ""
  # Model FLOPs of the step (the analytic count without remat's recompute: what MFU
  # divides), and whether the blocks were scanned (config.model.scan_layers).
  model_flops: float | None = None
  scan_layers: bool = True
  lowered: Any = dataclasses.field(default=None, repr=False, compare=False)
  compiled: Any = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def peak_bytes(self) -> int | None:
    """Held arguments + temporaries + outputs not aliased to (donated) arguments."""
    if self.temp_bytes is None:
      return None
    return self.held_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

  def fits(self) -> dict[str, bool]:
    """{card: fits} against the target's memory, or for a CPU target against the cards of
    :data:`DEVICE_GB` (the CPU rows are a plan for them)."""
    if self.error:
      return {self.target: False}
    if self.hbm_bytes is not None:
      return {self.target: self.peak_bytes <= self.hbm_bytes}
    return {k: self.peak_bytes <= gb * 1e9 for k, gb in DEVICE_GB.items()}

  def to_dict(self) -> dict[str, Any]:
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
         if f.name not in ("lowered", "compiled")}
    peak = self.peak_bytes
    d.update(peak_bytes=peak, peak_gib=None if peak is None else peak / GIB, fits=self.fits())
    return d


def configure(config: ml_collections.ConfigDict, *, mesh: tuple[int, ...],
              micro_batch_per_shard: int, length: int, remat: bool, objective: str,
              global_batch: int, remat_policy: str | None = None,
              scan_layers: bool | None = None) -> ml_collections.ConfigDict:
  """``config`` set up for one row: the mesh with rule-based parameter sharding, the
  micro-batch (per batch shard, i.e. per data x fsdp device), the length, remat (and,
  when given, the remat policy and whether the blocks are scanned; None keeps the
  config's)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.objective = objective
  c.mesh.shape = tuple(mesh)
  c.mesh.num_devices = 0
  c.mesh.param_sharding = "rules"
  shards = mesh[0] * mesh[1]
  c.batch.micro_batch = micro_batch_per_shard * shards
  c.batch.global_batch = global_batch
  c.model.length = length
  c.model.remat = bool(remat)
  if remat_policy is not None:
    c.model.remat_policy = str(remat_policy)
  if scan_layers is not None:
    c.model.scan_layers = bool(scan_layers)
  return c


def held_bytes(tree) -> int:
  """Bytes one device holds of ShapeDtypeStructs with shardings (the largest shard, so an
  uneven split is not under-counted; a leaf without a sharding counts whole)."""
  import math  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.shape if getattr(x, "sharding", None) is None else x.sharding.shard_shape(x.shape)
    total += math.prod(shape) * np.dtype(x.dtype).itemsize
  return total


def _default_target(target):
  # pylint: disable=import-outside-toplevel
  import jax
  from tokendrift_jax.perf import targets
  return targets.cpu(jax.device_count()) if target is None else target


def plan(config: ml_collections.ConfigDict, *, name: str, mesh: tuple[int, ...],
         micro_batch_per_shard: int, length: int, remat: bool, objective: str,
         global_batch: int, target=None, remat_policy: str | None = None,
         scan_layers: bool | None = None) -> MemoryRow:
  """Compiles the step of ``config`` for one row and reads XLA's analyses.

  ``target``: a :class:`perf.targets.Target` (default: every CPU device of this process);
  the step is ``builder.build_step``'s on the target's devices, the program training runs.
  ``remat_policy`` / ``scan_layers``: override the config's (None keeps them).
  """
  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.perf import flops as flops_lib
  from tokendrift_jax.train import builder
  target = _default_target(target)
  c = configure(config, mesh=mesh, micro_batch_per_shard=micro_batch_per_shard,
                length=length, remat=remat, objective=objective, global_batch=global_batch,
                remat_policy=remat_policy, scan_layers=scan_layers)
  parts = builder.build_step(c, devices=target.devices())
  program = compile_program(parts.step_fn.lower, parts.abstract_args(), target)
  micro = int(c.batch.micro_batch)
  n_micro = int(c.batch.global_batch) // micro
  analytic = flops_lib.step_flops(
      parts.model_cfg, objective=parts.objective, length=length, micro_batch=micro,
      n_micro=n_micro, remat_policy=(str(c.model.remat_policy) or "nothing_saveable") if remat else "")
  return MemoryRow(
      config=name, objective=objective, devices=parts.mesh.devices.size, mesh=tuple(mesh),
      micro_batch_per_shard=micro_batch_per_shard, length=length, remat=bool(remat),
      remat_policy=str(c.model.remat_policy), global_batch=int(c.batch.global_batch),
      micro_steps=n_micro, held_bytes=program.held_bytes,
      argument_bytes=program.argument_bytes, output_bytes=program.output_bytes,
      alias_bytes=program.alias_bytes, temp_bytes=program.temp_bytes,
      xla_flops=program.xla_flops, analytic_flops=float(analytic.hardware),
      compile_s=program.compile_s, target=target.spec, device_kind=target.device_kind,
      hbm_bytes=target.hbm_bytes, xla_peak_bytes=program.xla_peak_bytes,
      optimal_seconds=program.optimal_seconds, error=program.error,
      model_flops=float(analytic.model), scan_layers=bool(c.model.scan_layers),
      lowered=program.lowered, compiled=program.compiled)


def plan_sampler(model_cfg, process, *, target, mesh: tuple[int, ...], batch: int,
                 model_dtype: str = "float32", param_sharding: str = "replicated",
                 prompt_length: int = 0, **sampler_options) -> ProgramMemory:
  """The unconditional sampler of ``process`` (``diffusion.make_sampler``, as the
  evaluation builds it: backbone apply at ``model_dtype``, float32 as configs/eval.py
  ships, the process's default precision
  and noise removal, cache on) for int32[batch, model_cfg.length] samples, compiled for
  ``target`` on a (data, fsdp, tensor) ``mesh`` with parameters placed by
  ``param_sharding``. The step count is a traced int32 scalar: one program serves every
  NFE. ``sampler_options``: the process's (temperature; LLaDA block_length, cfg_scale).

  ``prompt_length`` P > 0 (a prompted process, LLaDA): instead the prompt-conditioned
  sampler (``process.make_generate``, as a prompted evaluation builds it) completing
  int32[batch, P] prompts with ``model_cfg.length - P`` tokens, the rows the evaluation's
  classifier-free guidance (``cfg_scale`` > 0) needs: each backbone call then runs
  2 x batch rows of ``model_cfg.length`` tokens."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  from tokendrift_jax import models
  from tokendrift_jax import sharding
  from tokendrift_jax.diffusion import sampling
  mesh_ = sharding.make_mesh(mesh, target.devices())
  gdef = models.graphdef(model_cfg, dtype=jnp.dtype(model_dtype))

  def apply_fn(params, x, sigma, **kw):
    return models.merge(gdef, params)(x, sigma, **kw)

  prompt_length = int(prompt_length)
  if prompt_length:
    if not process.prompted:
      raise ValueError(f"prompt_length={prompt_length}: process {process.name!r} has no "
                       f"prompt-conditioned sampler")
    if not 0 < prompt_length < model_cfg.length:
      raise ValueError(f"prompt_length={prompt_length} must be in [1, length - 1] for "
                       f"length={model_cfg.length}")
    generate = process.make_generate(apply_fn, batch=batch, prompt_length=prompt_length,
                                     gen_length=model_cfg.length - prompt_length, mesh=mesh_,
                                     **sampler_options)
    rows = sharding.batch_sharding(mesh_, ndim=2)
    prompt = jax.ShapeDtypeStruct((batch, prompt_length), jnp.int32, sharding=rows)

    def lower(params, key, steps):
      return generate.lower(params, prompt, key, steps)
  else:
    lower = sampling.make_sampler(process, apply_fn, batch=batch, length=model_cfg.length,
                                  mesh=mesh_, **sampler_options).lower
  abstract = models.abstract_params(model_cfg)
  family = models.family_of(model_cfg)
  logical = sharding.check_placement(param_sharding, mesh_, family.logical_axes, family.name)
  shardings = sharding.param_sharding(abstract, mesh_, param_sharding, logical_axes=logical)
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh_))
  steps = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated(mesh_))
  return compile_program(lower, (params, key, steps), target)


def plan_judge(judge_config, *, target, mesh: tuple[int, ...], batch: int,
               context: int | None = None, dtype: str = "float32",
               matmul_precision: str = "highest") -> ProgramMemory:
  """The Gen-PPL judge's scoring of one batch (``eval.genppl``'s jitted ``_score_batch``:
  GPT-2 forward + protocol-weighted NLL sums of int32[batch, context] chunks, parameters
  replicated and rows batch-sharded, as ``GenPPLEvaluator`` places them) for the GPT-2 of
  ``judge_config`` (a ``transformers.GPT2Config``; no weights needed), compiled for
  ``target``."""
  # pylint: disable=import-outside-toplevel
  import functools
  import jax
  import jax.numpy as jnp
  import transformers
  from tokendrift_jax import sharding
  from tokendrift_jax.eval import genppl
  mesh_ = sharding.make_mesh(mesh, target.devices())
  sharding.check_batch_divisible(batch, mesh_, "judge batch")
  context = int(judge_config.n_positions if context is None else context)
  model = transformers.FlaxGPT2LMHeadModel(judge_config, dtype=genppl.DTYPES[dtype],
                                           _do_init=False)
  abstract = model.params_shape_tree
  shardings = sharding.param_sharding(abstract, mesh_, "replicated")
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)
  rows = sharding.batch_sharding(mesh_, ndim=2)
  vec = sharding.batch_sharding(mesh_, ndim=1)
  tokens = jax.ShapeDtypeStruct((batch, context), jnp.int32, sharding=rows)
  lengths = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=vec)
  # The function GenPPLEvaluator jits (its constructor places real weights on the mesh,
  # which compile-only devices cannot hold, so the evaluator itself is not built here).
  score_batch = genppl._score_batch  # pylint: disable=protected-access
  score = jax.jit(functools.partial(score_batch, module=model.module,
                                    eos_id=int(judge_config.eos_token_id)))

  def lowered(*args):
    with jax.default_matmul_precision(matmul_precision):
      return score.lower(*args)

  return compile_program(lowered, (params, tokens, tokens, lengths, lengths), target)


# The shape of the paper's judge, GPT-2 Large (genppl.DEFAULT_JUDGE: its config.json,
# openai-community/gpt2-large): 36 layers of width 1280, 20 heads, context 1024, the GPT-2
# vocabulary (EOS = BOS = 50256, transformers' GPT2Config default).
JUDGE_SHAPES = {"gpt2-large": dict(vocab_size=50257, n_positions=1024, n_embd=1280,
                                   n_layer=36, n_head=20)}


def judge_shape(name: str = "gpt2-large"):
  """A ``transformers.GPT2Config`` with the shape of judge ``name`` (no weights: enough
  for :func:`plan_judge`)."""
  import transformers  # pylint: disable=import-outside-toplevel
  if name not in JUDGE_SHAPES:
    raise ValueError(f"judge {name!r}: shapes known here: {sorted(JUDGE_SHAPES)}")
  return transformers.GPT2Config(**JUDGE_SHAPES[name])


def plan_config_sampler(config: ml_collections.ConfigDict, *, target, mesh: tuple[int, ...],
                        batch: int, length: int | None = None, model_dtype: str = "float32",
                        param_sharding: str = "replicated", prompt_length: int = 0,
                        **sampler_options) -> tuple[ProgramMemory, str]:
  """:func:`plan_sampler` for the backbone of a training config (``config.model``, at
  ``length`` tokens, default the config's ``model.length``) under the config's diffusion
  process (``config.diffusion.process``, sized for the backbone as the evaluation builds
  it from a checkpoint). Returns the compiled program's memory and the process name."""
  # pylint: disable=import-outside-toplevel
  from tokendrift_jax import diffusion
  from tokendrift_jax.train import builder
  c = ml_collections.ConfigDict(config.to_dict())
  if length is not None:
    c.model.length = int(length)
  model_cfg = builder.model_config(c)
  process = diffusion.make_process_for_model(str(c.diffusion.process), model_cfg)
  program = plan_sampler(model_cfg, process, target=target, mesh=mesh, batch=batch,
                         model_dtype=model_dtype, param_sharding=param_sharding,
                         prompt_length=prompt_length, **sampler_options)
  return program, process.name


def program_row(program: str, memory: ProgramMemory, **settings) -> dict[str, Any]:
  """A sampler's or the judge's row for docs/scaling/targets.jsonl: ``program`` ("sampler"
  | "judge"), the ``settings`` it was planned with (config, mesh, batch, length, ...), the
  fields of ``memory`` and its peak; ``fits`` as in :meth:`MemoryRow.fits`."""
  d = {"program": program, **settings}
  d.update({f.name: getattr(memory, f.name) for f in dataclasses.fields(memory)
            if f.name not in ("lowered", "compiled")})
  peak = memory.peak_bytes
  if memory.error or memory.hbm_bytes is not None:
    fits = {memory.target: bool(memory.fits_target)}
  else:
    fits = {k: peak <= gb * 1e9 for k, gb in DEVICE_GB.items()}
  d.update(peak_bytes=peak, peak_gib=None if peak is None else peak / GIB, fits=fits)
  return d


def _gib(n) -> str:
  return "-" if n is None else f"{n / GIB:.1f}"


def format_program(what: str, p: ProgramMemory) -> str:
  """One line for a compiled program (a sampler, the judge) on a target."""
  hbm = "" if p.hbm_bytes is None else f" of {p.hbm_bytes / GIB:.1f} GiB"
  fits = {True: "fits", False: "does NOT fit", None: "not judged (CPU)"}[p.fits_target]
  if p.error:
    return (f"{what} on {p.target} ({p.devices} x {p.device_kind}): {fits}{hbm}: "
            f"{p.error}; arguments {_gib(p.held_bytes)} GiB; compiled in {p.compile_s:.1f} s")
  opt = "" if p.optimal_seconds is None else f"; XLA:TPU optimal_seconds {p.optimal_seconds:.4g}"
  return (f"{what} on {p.target} ({p.devices} x {p.device_kind}): per device "
          f"{_gib(p.peak_bytes)} GiB{hbm}, {fits} (arguments {_gib(p.held_bytes)}, "
          f"temporaries {_gib(p.temp_bytes)}, outputs {_gib(p.output_bytes)}, aliased "
          f"{_gib(p.alias_bytes)}){opt}; compiled in {p.compile_s:.1f} s")


def format_row(row: MemoryRow) -> str:
  fits = ", ".join(f"{k.split(' ')[0]} {'yes' if v else 'NO'}" for k, v in row.fits().items())
  head = (f"{row.config} {row.objective} target={row.target or 'cpu'} ({row.device_kind}) "
          f"devices={row.devices} mesh={row.mesh} micro_batch/shard={row.micro_batch_per_shard} "
          f"L={row.length} remat={row.remat}")
  hbm = "" if row.hbm_bytes is None else f" of {row.hbm_bytes / GIB:.1f} GiB"
  if row.error:
    return (f"{head}: does NOT fit{hbm}: {row.error}; arguments {_gib(row.held_bytes)} GiB; "
            f"compiled in {row.compile_s:.0f} s")
  extra = ""
  if row.xla_peak_bytes is not None:
    extra += f"; XLA:GPU peak_memory_in_bytes {_gib(row.xla_peak_bytes)} GiB"
  if row.optimal_seconds is not None:
    extra += f"; XLA:TPU optimal_seconds {row.optimal_seconds:.4g} (a loop body counted once)"
  return (f"{head}: per device {_gib(row.peak_bytes)} GiB{hbm} "
          f"(arguments {_gib(row.held_bytes)}, temporaries {_gib(row.temp_bytes)}, "
          f"outputs {_gib(row.output_bytes)}, aliased {_gib(row.alias_bytes)}); "
          f"fits: {fits}{extra}; step {row.analytic_flops:.3e} FLOPs (analytic, all devices); "
          f"compiled in {row.compile_s:.0f} s")


def markdown(rows: list[dict[str, Any]]) -> str:
  """docs/SCALING.md's table from the JSON rows that ``launch/plan_memory.py --out`` wrote."""
  head = ("| config | devices | mesh (d, f, t) | micro-batch / shard | sequences / micro-step "
          "| L | remat | "
          "arguments GiB | temporaries GiB | peak GiB | H100 80 | H200 141 | v5p 95 | "
          "compile s |")
  lines = [head, "|" + "---|" * 14]
  for r in rows:
    fits = [("yes" if r["fits"][k] else "no") for k in DEVICE_GB]
    lines.append(
        f"| {r['config'].removesuffix('.py')} | {r['devices']} | {tuple(r['mesh'])} | "
        f"{r['micro_batch_per_shard']} | "
        f"{r['micro_batch_per_shard'] * r['mesh'][0] * r['mesh'][1]} | {r['length']} | "
        f"{'yes' if r['remat'] else 'no'} | "
        f"{r['held_bytes'] / GIB:.1f} | {r['temp_bytes'] / GIB:.1f} | "
        f"{r['peak_bytes'] / GIB:.1f} | " + " | ".join(fits) + f" | {r['compile_s']:.0f} |")
  return "\n".join(lines)


def _memory_cells(r: dict[str, Any]) -> tuple[str, str, str, str, str]:
  """(temporaries, peak, XLA:GPU peak, device memory, fits) cells of a compiled row of
  :func:`markdown_targets` / :func:`markdown_programs` ("-" where the row has none)."""
  if r.get("error"):
    temp = peak = "-"
  else:
    temp, peak = f"{r['temp_bytes'] / GIB:.2f}", f"{r['peak_bytes'] / GIB:.2f}"
  gpu_peak = "-" if r.get("xla_peak_bytes") is None else f"{r['xla_peak_bytes'] / GIB:.2f}"
  hbm = "-" if r.get("hbm_bytes") is None else f"{r['hbm_bytes'] / GIB:.1f}"
  return temp, peak, gpu_peak, hbm, "yes" if all(r["fits"].values()) else "no"


def markdown_targets(rows: list[dict[str, Any]]) -> str:
  """docs/SCALING.md's table of rows compiled for a target (``--target``: TPU, GPU or CPU;
  a CPU row's fits compares with the cards of :data:`DEVICE_GB`, "yes" when all fit)."""
  head = ("| config | objective | target | mesh (d, f, t) | sequences / micro-step | L | remat "
          "| arguments GiB | temporaries GiB | peak GiB | device GiB | fits | XLA:GPU peak GiB "
          "| XLA:TPU optimal s | compile s |")
  lines = [head, "|" + "---|" * 15]
  for r in rows:
    temp, peak, gpu_peak, hbm, fits = _memory_cells(r)
    opt = "-" if r.get("optimal_seconds") is None else f"{r['optimal_seconds']:.3g}"
    lines.append(
        f"| {r['config'].removesuffix('.py')} | {r['objective']} | {r['target']} | "
        f"{tuple(r['mesh'])} | {r['micro_batch_per_shard'] * r['mesh'][0] * r['mesh'][1]} | "
        f"{r['length']} | {'yes' if r['remat'] else 'no'} | {r['held_bytes'] / GIB:.2f} | "
        f"{temp} | {peak} | {hbm} | {fits} | {gpu_peak} | {opt} | {r['compile_s']:.0f} |")
  return "\n".join(lines)


def markdown_programs(rows: list[dict[str, Any]]) -> str:
  """docs/SCALING.md's table of sampler and judge rows (``program_row``'s, written by
  ``launch/plan_memory.py --program=sampler|judge --out``)."""
  head = ("| program | config | process / judge | target | mesh (d, f, t) | batch | L | dtype "
          "| options | arguments GiB | temporaries GiB | peak GiB | device GiB | fits "
          "| XLA:GPU peak GiB | compile s |")
  lines = [head, "|" + "---|" * 16]
  for r in rows:
    temp, peak, gpu_peak, hbm, fits = _memory_cells(r)
    options = [f"{k} {v}" for k, v in sorted(r.get("options", {}).items())]
    if r.get("prompt_length"):
      options.append(f"prompt {r['prompt_length']}")
    options = ", ".join(options) or "-"
    what = r.get("process") or r.get("judge", "-")
    lines.append(
        f"| {r['program']} | {str(r.get('config') or '-').removesuffix('.py')} | {what} | "
        f"{r['target']} | {tuple(r['mesh'])} | {r['batch']} | {r['length']} | "
        f"{r['dtype']} | {options} | {r['held_bytes'] / GIB:.2f} | {temp} | {peak} | "
        f"{hbm} | {fits} | {gpu_peak} | {r['compile_s']:.0f} |")
  return "\n".join(lines)


def markdown_file(rows: list[dict[str, Any]]) -> str:
  """The tables of a JSON-lines file of rows: the training steps' (rows written with
  --target have one, :func:`markdown_targets`; the older CPU-only rows of
  docs/scaling/rows.jsonl do not, :func:`markdown`), then, when there are any, the
  samplers' and the judge's (:func:`markdown_programs`)."""
  steps = [r for r in rows if r.get("program", "step") == "step"]
  others = [r for r in rows if r.get("program", "step") != "step"]
  tables = []
  if steps:
    tables.append(markdown_targets(steps) if all(r.get("target") for r in steps)
                  else markdown(steps))
  if others:
    tables.append(markdown_programs(others))
  return "\n\n".join(tables)


if __name__ == "__main__":
  import json
  import sys
  with open(sys.argv[1], encoding="utf-8") as f:
    rows_ = [json.loads(line) for line in f if line.strip()]
  print(markdown_file(rows_))
