"""``python -m convert SRC DST``: PyTorch MDLM/DUO checkpoints -> tokendrift_jax backbones.

See ``python -m convert --help``. GPT-2 judges are converted by ``python -m convert.gpt2``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = """\
Convert a released PyTorch MDLM / DUO backbone to a tokendrift_jax (Flax, orbax)
checkpoint directory that `tokendrift_jax.checkpoints.load_backbone(DST)` reads.

SRC may be
  * a Hugging Face model directory: config.json with the MDLM / DUO HF fields
    (vocab_size, model_length, hidden_dim, cond_dim, n_blocks, n_heads, dropout; MDLM's
    time_conditioning; DUO's model_type "duo", always time-conditioned) and
    model.safetensors or pytorch_model.bin (sharded with an index is fine), weights
    under 'backbone.' (e.g. a local copy of kuleshov-group/mdlm-owt or s-sahoo/duo);
  * a bare .safetensors / .bin / .pt state dict of the DIT (names with or without
    'backbone.'); its architecture comes from --config;
  * a Lightning .ckpt written by the MDLM or DUO training code; the architecture comes
    from hyper_parameters['config'] (the vocabulary size from the embedding shape).
    WARNING: a Lightning .ckpt is a pickle; loading it runs code stored in the file.
    Only convert checkpoints you trust.

Every tensor is accounted for: a missing key, an unknown key or a wrong shape stops the
conversion with a one-line error and nothing is written. An existing DST is only
replaced with --force.

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
  parser = argparse.ArgumentParser(prog="python -m convert", description=HELP,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("src", metavar="SRC", help="HF model dir, .safetensors/.bin/.pt, or .ckpt")
  parser.add_argument("dst", metavar="DST", help="output checkpoint directory")
  parser.add_argument("--ema", action="store_true",
                      help="take ckpt['ema']['shadow_params'] (Lightning .ckpt only)")
  parser.add_argument("--arch", choices=("mdlm", "duo"),
                      help="backbone family (needed when SRC does not say)")
  parser.add_argument("--config", metavar="JSON",
                      help="DiTConfig fields as a JSON object or file; overrides SRC's")
  parser.add_argument("--force", action="store_true", help="replace an existing DST")
  args = parser.parse_args(argv)

  # Imported after argument parsing so --help is instant.
  from convert.dit import ConversionError, load_source  # pylint: disable=import-outside-toplevel
  from tokendrift_jax import checkpoints  # pylint: disable=import-outside-toplevel

  try:
    dst = os.path.abspath(args.dst)
    if os.path.exists(dst) and not args.force:
      raise ConversionError(f"{dst} already exists; pass --force to overwrite")
    params, config, meta = load_source(args.src, ema=args.ema, arch=args.arch,
                                       config_override=_parse_config(args.config))
    checkpoints.save_backbone(dst, config, params, meta=meta, force=args.force)
  except (ConversionError, checkpoints.CheckpointError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n = sum(int(v.size) for v in _leaves(params))
  print(f"converted {meta['source_kind']} {args.src} -> {dst}\n"
        f"  arch={meta['arch']} ema={meta['ema']} params={n:,}\n"
        f"  config={config.to_dict()}")
  if meta.get("ignored_non_backbone_entries"):
    print(f"  ignored non-backbone state_dict entries: {meta['ignored_non_backbone_entries']}")
  return 0


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree


if __name__ == "__main__":
  sys.exit(main())
