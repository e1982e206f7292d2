"""``python -m convert SRC DST``: released PyTorch backbones -> tokendrift_jax checkpoints.

See ``python -m convert --help``. GPT-2 judges are converted by ``python -m convert.gpt2``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = """\
Convert a released PyTorch backbone to a tokendrift_jax (Flax, orbax) checkpoint
directory that `tokendrift_jax.checkpoints.load_backbone(DST)` reads.

SRC may be, by --family:
{sources}

Every tensor is accounted for: a missing key, an unknown key or a wrong shape stops the
conversion with a one-line error and nothing is written. DST is checked (its parent a
directory, writable, some free space) before SRC is read. An existing DST is only
replaced with --force, and only once the new checkpoint is complete: a failed write
leaves the old DST intact.

GPT-2 judges for Gen-PPL: python -m convert.gpt2 SRC_HF_DIR DST_DIR
"""


def _parse_config(value: str | None) -> dict | None:
  if value is None:
    return None
  text = value
  if os.path.isfile(value):
    with open(value) as f:
      text = f.read()
  try:
    cfg = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"--config is neither a JSON object nor a JSON file: {e}") from e
  if not isinstance(cfg, dict):
    raise ValueError(f"--config must be a JSON object, got {type(cfg).__name__}")
  return cfg


def main(argv: list[str] | None = None) -> int:
  # Imported here so --help stays instant (the converters import numpy, the models jax).
  # pylint: disable=import-outside-toplevel
  import convert as registry
  from tokendrift_jax.diffusion import registry as process_registry
  sources = "\n".join(f"--family {name}:\n{registry.get_converter(name).SOURCES}"
                      for name in registry.families())
  parser = argparse.ArgumentParser(prog="python -m convert",
                                   description=HELP.format(sources=sources),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("src", metavar="SRC", help="HF model dir, .safetensors/.bin/.pt, or .ckpt")
  parser.add_argument("dst", metavar="DST", help="output checkpoint directory")
  parser.add_argument("--ema", action="store_true",
                      help="take ckpt['ema']['shadow_params'] (Lightning .ckpt only)")
  parser.add_argument("--family", default=None,
                      help=f"model family of SRC (known: {registry.families()}); default: "
                           f"from an HF directory's config.json (model_type / architectures "
                           f"naming LLaDA: llada; model_type \"Dream\" / DreamModel: dream), "
                           f"else dit")
  parser.add_argument("--process", choices=process_registry.names(),
                      help="diffusion process of the weights, mdlm (masked), duo (uniform) or "
                           "llada (LLaDA's masked process) or dream (Dream's); needed when SRC "
                           "does not say")
  parser.add_argument("--config", metavar="JSON",
                      help="the family's config fields as a JSON object or file; overrides "
                           "SRC's")
  parser.add_argument("--force", action="store_true", help="replace an existing DST")
  args = parser.parse_args(argv)

  from tokendrift_jax import checkpoints, fs

  try:
    # DST is not SRC, neither inside nor around it; an existing DST needs --force and is
    # replaced only when it is an earlier output of this project (or empty).
    dst = fs.check_replace(args.dst, force=args.force, sources=(args.src,),
                           kind="dir")
    # Before SRC is read and converted: a destination that cannot be written fails now.
    # An estimate (save_backbone checks the exact size again before writing): float32
    # weights are twice a 16-bit release; a Lightning .ckpt also holds optimizer state.
    size = _source_bytes(args.src)
    fs.check_writable_destination(
        dst, kind="dir", need_bytes=(size // 2 if args.src.endswith(".ckpt") else 2 * size)
        + fs.MiB)
    if args.family is None:
      args.family = registry.detect_family(args.src)
    converter = registry.get_converter(args.family)
    params, config, meta = converter.load_source(args.src, ema=args.ema, process=args.process,
                                                 config_override=_parse_config(args.config))
    checkpoints.save_backbone(dst, config, params, meta=meta, force=args.force)
  except (registry.ConversionError, checkpoints.CheckpointError, ValueError, OSError) as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return 2
  n = sum(int(v.size) for v in _leaves(params))
  print(f"converted {meta['source_kind']} {args.src} -> {dst}\n"
        f"  family={args.family} process={meta['process']} ema={meta['ema']} params={n:,}\n"
        f"  config={config.to_dict()}")
  if meta.get("ignored_non_backbone_entries"):
    print(f"  ignored non-backbone state_dict entries: {meta['ignored_non_backbone_entries']}")
  return 0


def _one_line(e: BaseException) -> str:
  text = str(e).strip()
  if isinstance(e, OSError) and e.filename is not None:
    text = f"{e.filename}: {e.strerror or text}"
  return text.splitlines()[0] if text else type(e).__name__


def _source_bytes(src: str) -> int:
  """Bytes of SRC's weight files (a file, or the files of a model directory); 0 if unknown."""
  try:
    if os.path.isfile(src):
      return os.path.getsize(src)
    if os.path.isdir(src):
      return sum(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src)
                 if os.path.isfile(os.path.join(src, f)))
  except OSError:
    pass
  return 0


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree


if __name__ == "__main__":
  sys.exit(main())
