"""``python -m convert.export SRC DST --format F``: project backbones -> the public formats.

The inverse of ``python -m convert``. SRC is any project backbone checkpoint:

* a backbone checkpoint directory (``params/`` + ``config/``: a converted release, a run's
  exported ``WORKDIR/backbone``);
* a training checkpoint: a run's ``WORKDIR``, its ``WORKDIR/checkpoints`` or one step
  directory ``WORKDIR/checkpoints/STEP``; ``--weights raw`` (default) or ``--weights ema``
  picks the trained or the EMA parameters, ``--step`` a step other than the latest.

The family's converter module writes the format (``convert.get_exporter(family).export``;
for the DiT: ``hf``, ``lightning``, ``safetensors``). Same rules as the importer: an
existing DST is only replaced with ``--force``; the export is written to a temporary
sibling of DST and renamed into place when complete, so an error leaves nothing behind
and, with --force, the old DST intact; every user error is one ``error: ...`` line and
exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = """\
Export a tokendrift_jax backbone (a converted release, a run's backbone/, or a training
checkpoint's raw or EMA weights) in the format the public code reads.

Formats, by the backbone's family:
{formats}

Tensors are float32 unless --dtype says otherwise, named and shaped as the public code
expects; `python -m convert DST` imports the export back, bit for bit at float32. A
backbone the public code cannot represent is refused with the reason. An existing DST is
only replaced with --force, and only once the new export is complete.
"""

# Suffixes the importer (`python -m convert`) recognises a file format by.
_SUFFIX = {"lightning": ".ckpt", "safetensors": ".safetensors"}


def _error():
  from convert import ConversionError  # pylint: disable=import-outside-toplevel
  return ConversionError


# ----------------------------------------------------------------------------- sources


def _storage_keys(tree):
  # orbax stores NNX's integer list keys as strings.
  if isinstance(tree, dict):
    return {str(k): _storage_keys(v) for k, v in tree.items()}
  return tree


def _memory_keys(tree):
  if isinstance(tree, dict):
    return {(int(k) if isinstance(k, str) and k.isdigit() else k): _memory_keys(v)
            for k, v in tree.items()}
  return tree


def _training_location(src: str, step: int | None) -> tuple[str, int] | None:
  """(checkpoint manager directory, step) when SRC is a training checkpoint, else None."""
  err = _error()
  if os.path.isdir(os.path.join(src, "checkpoints")):
    directory = os.path.join(src, "checkpoints")
  elif os.path.isdir(os.path.join(src, "state")) and os.path.basename(src).isdigit():
    if step is not None and step != int(os.path.basename(src)):
      raise err(f"{src}: --step {step} disagrees with the step directory given")
    return os.path.dirname(src), int(os.path.basename(src))
  elif os.path.isdir(src) and any(d.isdigit() and os.path.isdir(os.path.join(src, d, "state"))
                                  for d in os.listdir(src)):
    directory = src
  else:
    return None
  steps = sorted(int(d) for d in os.listdir(directory)
                 if d.isdigit() and os.path.isdir(os.path.join(directory, d, "state")))
  if not steps:
    raise err(f"{directory}: no complete training checkpoint (no STEP/state inside)")
  if step is None:
    return directory, steps[-1]
  if step not in steps:
    raise err(f"{directory}: no checkpoint at --step {step}; steps: {steps}")
  return directory, step


class Source:
  """A resolved SRC: ``config`` and ``meta`` (family, process, ...) read cheaply;
  :meth:`params` reads the weights (a pure dict of float32 numpy arrays)."""

  def __init__(self, src: str, *, weights: str | None = None, step: int | None = None,
               process: str | None = None):
    # pylint: disable=import-outside-toplevel
    from tokendrift_jax import checkpoints, models
    err = _error()
    self.src = os.path.abspath(src)
    if not os.path.exists(self.src):
      raise err(f"{self.src}: no such file or directory")
    if weights not in (None, "raw", "ema"):
      raise err(f"--weights {weights!r}: expected raw or ema")
    self._training = None
    if os.path.isdir(os.path.join(self.src, "params")) and os.path.isdir(
        os.path.join(self.src, "config")):
      if weights is not None or step is not None:
        raise err(f"{self.src}: --weights/--step apply to training checkpoints; a backbone "
                  f"checkpoint holds one set of weights")
      self.kind = "backbone"
      self.config, self.meta = checkpoints.read_backbone_config(self.src)
    else:
      where = _training_location(self.src, step) if os.path.isdir(self.src) else None
      if where is None:
        raise err(f"{self.src}: not a backbone checkpoint (no params/ and config/ inside) nor "
                  f"a training checkpoint (no checkpoints/STEP/state); SRC must be a "
                  f"tokendrift_jax backbone, a run's WORKDIR or WORKDIR/checkpoints[/STEP]")
      self.kind = "training"
      self._training = where
      self.weights = weights or "raw"
      raw = self._restore(meta=True)["meta"]
      family = raw.get("family", checkpoints.LEGACY_FAMILY)
      try:
        self.config = models.config_from_dict(family, raw["model"])
      except (KeyError, TypeError, ValueError) as e:
        raise err(f"{where[0]}/{where[1]}: the training meta has no usable 'model' ({e})") from e
      # Checkpoints written before diffusion.process existed call it "backbone".
      self.meta = {"family": family, "process": raw.get("process", raw.get("backbone")),
                   "source": os.path.join(where[0], str(where[1])), "step": where[1],
                   "weights": self.weights, "objective": raw.get("objective")}
    if process is not None:
      if self.meta.get("process") not in (None, process):
        raise err(f"{self.src}: --process {process} but the checkpoint records "
                  f"{self.meta['process']!r}")
      self.meta["process"] = process

  def _restore(self, *, meta: bool = False, target=None) -> dict:
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    directory, step = self._training
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        create=False, read_only=True), item_names=("state", "data", "meta"))
    try:
      if meta:
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
      # Only the one parameter tree, as host numpy arrays: no optimizer state is read and
      # the device layout of the run that wrote it does not matter.
      args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
      return manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=target, restore_args=args, partial_restore=True)))
    finally:
      manager.close()

  def params(self) -> dict:
    # pylint: disable=import-outside-toplevel
    import jax
    import numpy as np
    from tokendrift_jax import checkpoints, models
    err = _error()
    if self.kind == "backbone":
      _, params, _ = checkpoints.load_backbone_params(self.src)
      return params
    key = {"raw": "params", "ema": "ema_params"}[self.weights]
    shapes = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), models.abstract_params(self.config))
    try:
      state = self._restore(target={key: _storage_keys(shapes)})["state"]
    except Exception as e:  # orbax raises assorted types for a missing or mismatched tree
      hint = (" (was the run trained with EMA off? use --weights raw)" if key == "ema_params"
              else "")
      raise err(f"{self.meta['source']}: cannot read the {self.weights} weights "
                f"'{key}'{hint}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                ) from e
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), _memory_keys(state[key]))
    try:
      checkpoints.check_param_shapes(self.config, params, self.meta["source"])
    except checkpoints.CheckpointError as e:
      raise err(str(e)) from e
    return params


# ----------------------------------------------------------------------------- writing


# The write-new-then-swap helper is shared with save_backbone (tokendrift_jax.fs).
def write_then_swap(dst: str, write) -> None:
  """Calls ``write(tmp)`` for a temporary sibling ``tmp`` of ``dst``, then swaps it in; an
  existing ``dst`` survives any failure (see :func:`tokendrift_jax.fs.write_then_swap`)."""
  from tokendrift_jax import fs  # pylint: disable=import-outside-toplevel
  fs.write_then_swap(dst, write, label="export")


def export(src: str, dst: str, *, fmt: str, weights: str | None = None,
           step: int | None = None, process: str | None = None, dtype: str = "float32",
           max_shard_size: str = "5GB", force: bool = False) -> dict:
  """Exports SRC to DST; returns a summary. Every check runs before anything is written.

  Raises:
    ConversionError / CheckpointError: one-line user errors.
  """
  import convert as registry  # pylint: disable=import-outside-toplevel
  err = registry.ConversionError
  from tokendrift_jax import fs  # pylint: disable=import-outside-toplevel
  # DST is not SRC, neither inside nor around it; an existing DST needs --force and is
  # replaced only when it is an earlier output of this project (or empty).
  dst = fs.check_replace(dst, force=force, sources=(src,),
                         kind="file" if fmt in _SUFFIX else "dir")
  source = Source(src, weights=weights, step=step, process=process)
  family = source.meta["family"]
  exporter = registry.get_exporter(family)
  if fmt not in exporter.EXPORT_FORMATS:
    raise err(f"unknown format {fmt!r}; the {family} family exports "
              f"{list(exporter.EXPORT_FORMATS)}")
  dtypes = getattr(exporter, "EXPORT_DTYPES", ("float32",))
  if dtype not in dtypes:
    raise err(f"--dtype {dtype!r}: the {family} exporter writes {list(dtypes)}")
  if fmt in _SUFFIX and not dst.endswith(_SUFFIX[fmt]):
    raise err(f"{dst}: --format {fmt} writes one file whose name must end with "
              f"{_SUFFIX[fmt]} (python -m convert recognises the format by it)")
  if hasattr(exporter, "check_exportable"):
    try:
      exporter.check_exportable(source.config, source.meta, fmt)
    except err as e:
      raise err(f"{source.src}: {e}") from e
  if not os.path.isdir(os.path.dirname(dst)):
    raise err(f"{os.path.dirname(dst)}: the parent directory of DST does not exist")
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np
  from tokendrift_jax import fs, models
  n_params = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(models.abstract_params(
      source.config)))
  fs.check_writable_destination(dst, kind="dir" if fmt not in _SUFFIX else "file",
                                need_bytes=n_params * (4 if dtype == "float32" else 2) + fs.MiB,
                                create_parents=False)
  params = source.params()
  files: list[str] = []

  def write(tmp):
    files.extend(exporter.export(params, source.config, source.meta, tmp, fmt=fmt,
                                 dtype=dtype, max_shard_size=max_shard_size))

  write_then_swap(dst, write)
  if fmt in _SUFFIX:   # a one-file format: the exporter named the temporary file
    files = [os.path.basename(dst)]
  return {"src": source.src, "kind": source.kind, "dst": dst, "format": fmt,
          "family": family, "process": source.meta.get("process"), "dtype": dtype,
          "weights": getattr(source, "weights", None), "step": source.meta.get("step"),
          "params": int(sum(np.size(x) for x in jax.tree.leaves(params))), "files": files}


def main(argv: list[str] | None = None) -> int:
  import convert as registry  # pylint: disable=import-outside-toplevel
  formats = "\n".join(f"--family {name}: {list(registry.get_exporter(name).EXPORT_FORMATS)}\n"
                      f"{getattr(registry.get_exporter(name), 'EXPORTS', '')}"
                      for name in registry.exporter_families())
  parser = argparse.ArgumentParser(prog="python -m convert.export",
                                   description=HELP.format(formats=formats),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("src", metavar="SRC", help="backbone checkpoint dir, or a training run's "
                                                 "WORKDIR / WORKDIR/checkpoints[/STEP]")
  parser.add_argument("dst", metavar="DST", help="output: a directory (hf) or a file "
                                                 "(.ckpt, .safetensors)")
  # Validated against the family's formats (not argparse choices) so that an unknown
  # format is a one-line error like every other.
  parser.add_argument("--format", dest="fmt", required=True, metavar="FORMAT",
                      help="hf | lightning | safetensors (for the dit family)")
  parser.add_argument("--weights", choices=("raw", "ema"),
                      help="training checkpoints: the trained (raw, default) or EMA weights")
  parser.add_argument("--step", type=int, help="training checkpoints: the step (default latest)")
  parser.add_argument("--process", choices=("mdlm", "duo"),
                      help="the diffusion process, when SRC does not record it")
  parser.add_argument("--dtype", default="float32",
                      help="float32 (default), bfloat16 or float16")
  parser.add_argument("--max-shard-size", default="5GB",
                      help="hf: shard model.safetensors above this size (default 5GB)")
  parser.add_argument("--force", action="store_true", help="replace an existing DST")
  args = parser.parse_args(argv)

  from tokendrift_jax import checkpoints  # pylint: disable=import-outside-toplevel
  try:
    out = export(args.src, args.dst, fmt=args.fmt, weights=args.weights, step=args.step,
                 process=args.process, dtype=args.dtype, max_shard_size=args.max_shard_size,
                 force=args.force)
  except (registry.ConversionError, checkpoints.CheckpointError, ValueError, OSError) as e:
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    return 2
  weights = f" weights={out['weights']} step={out['step']}" if out["kind"] == "training" else ""
  print(f"exported {out['kind']} {out['src']} -> {out['dst']}\n"
        f"  format={out['format']} family={out['family']} process={out['process']} "
        f"dtype={out['dtype']}{weights} params={out['params']:,}\n"
        f"  files: {', '.join(out['files'])}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
