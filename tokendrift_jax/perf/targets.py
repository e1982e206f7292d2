"""What a compilation target is: simulated CPU devices, a TPU slice, or N GPUs of one kind.

A target string names the hardware a program is planned for (``launch/plan_memory.py
--target``):

* ``cpu:N`` — N CPU devices of this process (XLA:CPU; the device count must be set before
  JAX starts, ``--xla_force_host_platform_device_count=N``, which plan_memory does).
* ``tpu:<gen>-<n>`` — a Cloud TPU slice by its name, gen one of v4, v5p, v5e (also
  ``v5litepod``), v6e. As Cloud TPU writes them, v4 and v5p slice names count TensorCores
  (2 per chip: ``v5p-16`` = 8 chips = topology ``v5p:2x2x2``) and v5e / v6e names count
  chips (``v6e-8`` = 8 chips = ``v6e:2x4``). ``tpu:<gen>:<AxBxC>`` gives a topology
  directly (``tpu:v5p:2x2x2``). The smallest slice the compiler accepts is one host of
  4 chips (2x2x1).
* ``gpu:<kind>x<n>`` — n GPUs of ``kind`` (h100, h200), 8 per host (``gpu:h100x8``).

:meth:`Target.devices` gives the target's devices. For TPU and GPU they are compile-only
devices (``jax.experimental.topologies``): XLA:TPU (libtpu) and XLA:GPU (the CUDA plugin,
with the vendored target descriptions of ``gpu_targets/``) compile for them on a machine
without the accelerator, with ``JAX_PLATFORMS=cpu``; nothing can run on them. Each target
also states its per-device memory and peak FLOP/s, with the source of each figure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
from typing import Any

# ------------------------------------------------------------------------------ TPU facts
# Per chip, from the Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4,
# /v5e, /v5p, /v6e: "HBM capacity" and "peak compute per chip (bf16)"): v4 32 GiB,
# 275 TFLOP/s; v5e 16 GiB, 197 TFLOP/s; v5p 95 GiB, 459 TFLOP/s; v6e 32 GiB, 918 TFLOP/s.
# libtpu 0.0.42.1 agrees: a program too large for one device fails to compile with
# "exceeds available HBM (X)", X = 15.25G (v4, per TensorCore), 15.75G (v5e), 95.74G (v5p),
# 31.25G (v6e) — the chip's HBM less what the runtime reserves — and its cost model times
# an 8192^3 bf16 matmul at 137, 197, 394 and 918 TFLOP/s per device.
# ``cores_per_device``: libtpu's compile-only v4 topologies have one device per TensorCore
# (core_on_chip 0 and 1, no megacore), so a v4 device is half a chip; v5p's are megacore
# (one device per chip, both cores); v5e and v6e chips have one TensorCore.
# Google publishes no fp32 peak: the MXU multiplies bf16 operands and an fp32 matmul is
# several bf16 passes (how many depends on the matmul precision), so float32 is None.
GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class _TpuGen:
  name: str              # the topology prefix libtpu takes ("v5p")
  device_kind: str       # jax's device_kind of its devices
  chip_hbm_bytes: int
  chip_bf16_flops: float
  slice_counts_cores: bool   # slice names count TensorCores (v4, v5p) or chips
  devices_per_chip: int
  dims: int              # torus dimensions (3 for v4/v5p, 2 for v5e/v6e)


_TPU = {
    "v4": _TpuGen("v4", "TPU v4", 32 * GIB, 275e12, True, 2, 3),
    "v5p": _TpuGen("v5p", "TPU v5", 95 * GIB, 459e12, True, 1, 3),
    "v5e": _TpuGen("v5e", "TPU v5 lite", 16 * GIB, 197e12, False, 1, 2),
    "v6e": _TpuGen("v6e", "TPU v6 lite", 32 * GIB, 918e12, False, 1, 2),
}
# Cloud TPU calls v5e slices "v5litepod-N".
_TPU_ALIASES = {"v5litepod": "v5e"}

GPU_KINDS = {"h100": "h100_sxm.txtpb", "h200": "h200.txtpb"}
GPUS_PER_HOST = 8   # an HGX/DGX H100/H200 board
_GPU_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_targets")

ACCEPTED = ("cpu:N (N simulated CPU devices), tpu:<v4|v5p|v5e|v6e>-<n> (a Cloud TPU slice "
            "name; v4/v5p count TensorCores, v5e/v6e chips; n >= 4 chips, a power of two), "
            "tpu:<gen>:<AxBxC> (a topology), gpu:<h100|h200>x<n> (n GPUs, 8 per host)")


class TargetError(ValueError):
  """A target string or a target's toolchain problem, one line naming what is accepted."""


@dataclasses.dataclass(frozen=True)
class Target:
  """One compilation target.

  Attributes:
    spec: the string it was parsed from.
    platform: "cpu", "tpu" or "gpu".
    kind: "cpu", a TPU generation ("v5p") or a GPU kind ("h100").
    num_devices: devices a mesh over the whole target has (TPU: chips, or TensorCores
      for v4; GPU: cards).
    topology: the topology string the compiler takes ("v5p:2x2x2", GPU "1x1x8"; "" for
      CPU).
    device_kind: the devices' ``device_kind`` as JAX reports it.
    hbm_bytes: memory of one device (None for CPU: host memory is not planned here).
    peak_flops: {"bfloat16": FLOP/s, "float32": FLOP/s or None} of one device (dense;
      None where no rate is published or derivable).
    source: where the figures come from.
  """
  spec: str
  platform: str
  kind: str
  num_devices: int
  topology: str
  device_kind: str
  hbm_bytes: int | None
  peak_flops: dict[str, float | None]
  source: str

  def devices(self) -> list[Any]:
    """The target's devices, in the order a mesh takes them (compile-only for TPU/GPU)."""
    if self.platform == "cpu":
      return _cpu_devices(self.num_devices)
    if self.platform == "tpu":
      devices = _tpu_devices(self.topology)
    else:
      devices = _gpu_devices(self.kind, self.topology)
    if len(devices) != self.num_devices:
      raise TargetError(f"target {self.spec}: the compiler gave {len(devices)} devices for "
                        f"topology {self.topology}, expected {self.num_devices}")
    return devices

  def fits(self, nbytes: int) -> bool | None:
    """Whether ``nbytes`` per device fits this target's memory (None for CPU)."""
    return None if self.hbm_bytes is None else int(nbytes) <= self.hbm_bytes

  def describe(self) -> str:
    hbm = "host memory" if self.hbm_bytes is None else f"{self.hbm_bytes / GIB:.1f} GiB"
    bf16 = self.peak_flops.get("bfloat16")
    peak = "" if bf16 is None else f", peak bf16 {bf16 / 1e12:.0f} TFLOP/s"
    topo = f" (topology {self.topology})" if self.topology else ""
    return f"{self.spec}: {self.num_devices} x {self.device_kind}{topo}, {hbm}{peak} per device"


# ------------------------------------------------------------------------------ parsing


def parse(spec: str) -> Target:
  """The :class:`Target` of a string (see the module docstring); TargetError otherwise."""
  text = str(spec).strip().lower()
  platform, sep, rest = text.partition(":")
  if not sep or not rest:
    raise TargetError(f"--target {spec!r}: expected one of {ACCEPTED}")
  if platform == "cpu":
    return _parse_cpu(spec, rest)
  if platform == "tpu":
    return _parse_tpu(spec, rest)
  if platform == "gpu":
    return _parse_gpu(spec, rest)
  raise TargetError(f"--target {spec!r}: unknown platform {platform!r}; expected one of "
                    f"{ACCEPTED}")


def cpu(num_devices: int) -> Target:
  """``cpu:N``: the first N CPU devices of this process."""
  return parse(f"cpu:{int(num_devices)}")


def _positive(spec: str, text: str, what: str) -> int:
  if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
    raise TargetError(f"--target {spec!r}: {what} must be a positive integer, got {text!r}; "
                      f"accepted: {ACCEPTED}")
  return int(text)


def _parse_cpu(spec: str, rest: str) -> Target:
  n = _positive(spec, rest, "the CPU device count")
  # No peak: a host's rate is measured (perf/benchmark.measure_matmul_peak), not stated.
  return Target(spec=f"cpu:{n}", platform="cpu", kind="cpu", num_devices=n, topology="",
                device_kind="cpu", hbm_bytes=None,
                peak_flops={"bfloat16": None, "float32": None},
                source="simulated CPU devices (XLA:CPU)")


def _slice_shape(chips: int, dims: int) -> tuple[int, ...]:
  """The topology Cloud TPU gives a slice of ``chips`` chips: 2x2x1 (or 2x2) for one host of
  4, then the smallest dimension doubles (2x2x2, 2x2x4, 2x4x4, 4x4x4, ...; 2x4, 4x4, 4x8)."""
  shape = [2, 2] + [1] * (dims - 2)
  while math.prod(shape) < chips:
    i = shape.index(min(shape))
    shape[i] *= 2
  if chips > 4:
    shape = sorted(shape)
  return tuple(shape)


def _parse_tpu(spec: str, rest: str) -> Target:
  gen_text, sep, topo = rest.partition(":")
  if sep:  # a topology, tpu:v5p:2x2x2
    gen = _tpu_gen(spec, gen_text)
    if not re.fullmatch(r"[0-9]+(x[0-9]+){1,2}", topo):
      raise TargetError(f"--target {spec!r}: topology {topo!r} must be AxB or AxBxC; "
                        f"accepted: {ACCEPTED}")
    shape = tuple(int(v) for v in topo.split("x"))
    if min(shape) < 1:
      raise TargetError(f"--target {spec!r}: topology sizes must be >= 1")
    chips = math.prod(shape)
  else:    # a slice name, tpu:v5p-16
    m = re.fullmatch(r"([a-z0-9]+)-([0-9]+)", rest)
    if not m:
      raise TargetError(f"--target {spec!r}: expected a slice name such as tpu:v5p-16 or a "
                        f"topology such as tpu:v5p:2x2x2; accepted: {ACCEPTED}")
    gen = _tpu_gen(spec, m.group(1))
    n = _positive(spec, m.group(2), "the slice size")
    if gen.slice_counts_cores and n % 2:
      raise TargetError(f"--target {spec!r}: {gen.name} slice names count TensorCores, 2 per "
                        f"chip, so the size must be even")
    chips = n // 2 if gen.slice_counts_cores else n
    if chips < 4 or chips & (chips - 1):
      raise TargetError(f"--target {spec!r}: {chips} chip(s); slice names are accepted for a "
                        f"power of two >= 4 chips (one host of 4 is the smallest slice the "
                        f"compiler takes); give other shapes as tpu:{gen.name}:<AxBxC>")
    shape = _slice_shape(chips, gen.dims)
  topology = f"{gen.name}:{'x'.join(str(v) for v in shape)}"
  return Target(
      spec=spec, platform="tpu", kind=gen.name, num_devices=chips * gen.devices_per_chip,
      topology=topology, device_kind=gen.device_kind,
      hbm_bytes=gen.chip_hbm_bytes // gen.devices_per_chip,
      peak_flops={"bfloat16": gen.chip_bf16_flops / gen.devices_per_chip, "float32": None},
      source=f"Cloud TPU {gen.name} specifications (per chip {gen.chip_hbm_bytes // GIB} GiB "
             f"HBM, {gen.chip_bf16_flops / 1e12:.0f} TFLOP/s bf16)")


def _tpu_gen(spec: str, name: str) -> _TpuGen:
  name = _TPU_ALIASES.get(name, name)
  if name not in _TPU:
    raise TargetError(f"--target {spec!r}: unknown TPU generation {name!r}; accepted: "
                      f"{sorted(_TPU)} ({ACCEPTED})")
  return _TPU[name]


def _parse_gpu(spec: str, rest: str) -> Target:
  m = re.fullmatch(r"([a-z0-9]+?)(?:x([0-9]+))?", rest)
  kind = m.group(1) if m else rest
  if not m or kind not in GPU_KINDS:
    raise TargetError(f"--target {spec!r}: unknown GPU {rest!r}; accepted: "
                      f"{', '.join(f'gpu:{k}x<n>' for k in GPU_KINDS)} ({ACCEPTED})")
  n = 1 if m.group(2) is None else _positive(spec, m.group(2), "the GPU count")
  if n > GPUS_PER_HOST and n % GPUS_PER_HOST:
    raise TargetError(f"--target {spec!r}: more than {GPUS_PER_HOST} GPUs are hosts of "
                      f"{GPUS_PER_HOST}; give a multiple of {GPUS_PER_HOST}")
  hosts, per_host = (1, n) if n <= GPUS_PER_HOST else (n // GPUS_PER_HOST, GPUS_PER_HOST)
  info = gpu_description(kind)
  return Target(
      spec=spec, platform="gpu", kind=kind, num_devices=n, topology=f"1x{hosts}x{per_host}",
      device_kind=info["name"], hbm_bytes=info["device_memory_size"],
      peak_flops={"bfloat16": info["bf16_flops"], "float32": info["fp32_flops"]},
      source=f"XLA's target description gpu_targets/{GPU_KINDS[kind]} (openxla/xla)")


# ------------------------------------------------------------------------------ GPU files


def gpu_target_config(kind: str) -> str:
  """The vendored GpuTargetConfigProto text of ``kind`` without the
  ``collective_memory_granularity`` line (a field newer than jaxlib 0.10.2's proto, which
  refuses the whole description if it is present)."""
  with open(os.path.join(_GPU_DIR, GPU_KINDS[kind]), encoding="utf-8") as f:
    lines = f.read().splitlines()
  return "\n".join(l for l in lines if not l.strip().startswith("collective_memory_granularity"))


def _text_proto(text: str) -> dict[str, Any]:
  """A minimal reader of the text-proto subset the descriptions use: ``key: scalar`` and
  ``key { ... }``; repeated keys become lists."""
  tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+', text)
  pos = 0

  def value(tok: str):
    if tok.startswith('"'):
      return tok[1:-1]
    for cast in (int, float):
      try:
        return cast(tok)
      except ValueError:
        pass
    return tok   # an enum name or a bool

  def block() -> dict[str, Any]:
    nonlocal pos
    out: dict[str, Any] = {}
    while pos < len(tokens) and tokens[pos] != "}":
      key = tokens[pos]
      pos += 1
      if tokens[pos] == ":":
        pos += 1
      if tokens[pos] == "{":
        pos += 1
        item = block()
        pos += 1   # the closing brace
      else:
        item = value(tokens[pos])
        pos += 1
      if key in out:
        out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [item]
      else:
        out[key] = item
    return out

  return block()


# XLA's PrimitiveType numbers (xla/xla_data.proto), the keys of the descriptions' rate_infos.
_F32, _BF16 = 11, 16


@functools.lru_cache(maxsize=None)
def gpu_description(kind: str) -> dict[str, Any]:
  """Figures of one GPU from its target description: ``name``, ``device_memory_size``
  (bytes), ``bf16_flops`` and ``fp32_flops`` (dense peak FLOP/s of one GPU).

  Peak = 2 (an FMA is two FLOPs) x SMs (``core_count``) x units per SM x ops per clock x
  clock, from ``matrix_unit_description`` (tensor cores) for bf16 and from
  ``scalar_unit_description`` (CUDA cores; IEEE fp32, not TF32) for fp32. For the H100 SXM
  this gives 989 and 66.9 TFLOP/s, NVIDIA's datasheet figures (dense).
  """
  info = _text_proto(gpu_target_config(kind))["gpu_device_info"]

  def rate(unit: str, ptype: int) -> float:
    rates = info[unit]["rate_infos"]
    rates = rates if isinstance(rates, list) else [rates]
    r = next(r["value"] for r in rates if r["key"] == ptype)
    return 2.0 * info["core_count"] * r["units_per_core"] * r["ops_per_clock"] * (
        r["clock_rate_ghz"] * 1e9)

  return {"name": info["name"], "device_memory_size": int(info["device_memory_size"]),
          "bf16_flops": rate("matrix_unit_description", _BF16),
          "fp32_flops": rate("scalar_unit_description", _F32)}


# ------------------------------------------------------------------------------ devices


def _cpu_devices(n: int) -> list[Any]:
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices("cpu")
  if len(devices) < n:
    raise TargetError(f"target cpu:{n} needs {n} CPU devices, this process has "
                      f"{len(devices)}: set XLA_FLAGS=--xla_force_host_platform_device_count="
                      f"{n} before JAX starts (launch/plan_memory.py does)")
  return list(devices[:n])


@contextlib.contextmanager
def _quiet_libtpu(accelerator_type: str):
  """Environment for compile-only libtpu use while libtpu loads, for the variables the user
  has not set; restored afterwards.

  ALLOW_MULTIPLE_LIBTPU_LOAD: libtpu takes a lock so that one process owns the local
  chips; compiling for a topology owns none, and two planning processes (or tests) may load
  it at once. TPU_SKIP_MDS_QUERY / TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES: off a TPU VM
  libtpu queries the GCE metadata server for them and warns when it finds nothing; the
  compile-only topology does not use them. Restored because they describe a TPU cluster:
  left set, TPU_WORKER_HOSTNAMES makes this process (and the processes it starts) look like
  a TPU host to jax.distributed's auto-detection (runtime.init_distributed).
  """
  # Read once, when libtpu loads; the topology name, not TPU_ACCELERATOR_TYPE, decides what
  # is compiled for (checked: the same cost-model times for v5e and v6e whatever it says).
  wanted = {"ALLOW_MULTIPLE_LIBTPU_LOAD": "1", "TPU_SKIP_MDS_QUERY": "1",
            "TPU_WORKER_HOSTNAMES": "localhost", "TPU_ACCELERATOR_TYPE": accelerator_type}
  added = [k for k in wanted if k not in os.environ]
  for k in added:
    os.environ[k] = wanted[k]
  try:
    yield
  finally:
    for k in added:
      os.environ.pop(k, None)


@functools.lru_cache(maxsize=None)
def _tpu_devices(topology: str) -> list[Any]:
  # Cached: shardings built on one call's devices must compare equal to the next call's.
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  gen, shape = topology.split(":")
  chips = math.prod(int(v) for v in shape.split("x"))
  try:
    with _quiet_libtpu(f"{gen}-{chips * (2 if _TPU[gen].slice_counts_cores else 1)}"):
      return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
  except (ImportError, RuntimeError) as e:
    raise TargetError(f"cannot compile for TPU topology {topology!r}: {_first_line(e)} "
                      f"(install libtpu as pinned in requirements-dev.txt)") from e


@functools.lru_cache(maxsize=None)
def _gpu_devices(kind: str, topology: str) -> list[Any]:
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    return list(topologies.get_topology_desc(platform="cuda", topology=topology,
                                             target_config=gpu_target_config(kind)).devices)
  except (ImportError, RuntimeError) as e:
    raise TargetError(f"cannot compile for {kind} GPUs ({topology}): {_first_line(e)} "
                      f"(install jax-cuda12-plugin, jax-cuda12-pjrt and nvidia-cuda-nvcc-cu12 "
                      f"as pinned in requirements-dev.txt)") from e


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
