"""Convert a Hugging Face PyTorch GPT-2 directory into Flax weights for the Gen-PPL judge.

    python -m convert.gpt2 SRC DST [--force] [--no-verify]

SRC is a directory as downloaded from the hub (e.g. ``hf download
openai-community/gpt2-large --local-dir SRC``): ``config.json``, PyTorch weights
(``model.safetensors`` or ``pytorch_model.bin``) and the tokenizer files. DST gets
``flax_model.msgpack`` + ``config.json`` (written by transformers' own ``from_pt=True``
conversion) and a copy of the tokenizer files, so that
``FlaxGPT2LMHeadModel.from_pretrained(DST)`` and ``AutoTokenizer.from_pretrained(DST)``
work without torch. Reading SRC needs torch (requirements-convert.txt).

DST is written to a temporary directory beside it and renamed into place at the end,
so an error never leaves a half-written DST behind.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys

import numpy as np

from tokendrift_jax import fs

# Files that make up a GPT-2 tokenizer in an HF directory (slow and fast forms).
TOKENIZER_FILES = (
    "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json",
)
_PT_WEIGHTS = (
    "model.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json",
)
FLAX_WEIGHTS = "flax_model.msgpack"

# Token ids fed to both models when verifying a conversion.
_VERIFY_LENGTH = 16


def _check_src(src: pathlib.Path) -> dict:
  if not src.is_dir():
    raise FileNotFoundError(
        f"GPT-2 source directory {str(src)!r} does not exist; download it first, e.g. "
        f"`hf download openai-community/gpt2-large --local-dir {src}`")
  config_path = src / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{str(config_path)!r} is missing: {str(src)!r} is not an HF model directory")
  config = json.loads(config_path.read_text())
  if config.get("model_type") != "gpt2":
    raise ValueError(
        f"{str(config_path)!r} has model_type={config.get('model_type')!r}; "
        "`python -m convert.gpt2` converts GPT-2 checkpoints only")
  if not any((src / name).is_file() for name in _PT_WEIGHTS):
    raise FileNotFoundError(
        f"no PyTorch weights in {str(src)!r} (looked for {', '.join(_PT_WEIGHTS)})")
  if not any((src / name).is_file() for name in TOKENIZER_FILES):
    raise FileNotFoundError(
        f"no tokenizer files in {str(src)!r} (looked for {', '.join(TOKENIZER_FILES)}); "
        "the Gen-PPL judge retokenizes with the tokenizer stored beside its weights")
  return config


def _verify(src: pathlib.Path, dst: pathlib.Path, vocab_size: int, n_positions: int) -> float:
  """Max |logit difference| between the PyTorch model in src and the Flax one in dst.

  Raises ValueError when they disagree beyond float32 round-off.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top


  length = min(_VERIFY_LENGTH, n_positions)
  ids = np.random.default_rng(0).integers(0, vocab_size, size=(1, length), dtype=np.int64)
  pt_model = transformers.GPT2LMHeadModel.from_pretrained(str(src), torch_dtype=torch.float32).eval()
  with torch.no_grad():
    expected = pt_model(torch.from_numpy(ids)).logits.double().numpy()
  del pt_model
  flax_model, params = transformers.FlaxGPT2LMHeadModel.from_pretrained(str(dst), _do_init=False)
  ids32 = ids.astype(np.int32)
  positions = np.arange(length, dtype=np.int32)[None, :]
  forward = jax.jit(lambda p, x: flax_model.module.apply(
      {"params": p}, x, jax.numpy.ones_like(x), positions,
      deterministic=True, return_dict=False)[0])
  # Full float32 matmuls: the check is about the weights, not about TF32.
  with jax.default_matmul_precision("highest"):
    got = np.asarray(forward(params, ids32), dtype=np.float64)
  err = float(np.max(np.abs(got - expected)))
  # Both sides run float32 with different operation order; over GPT-2 large's 36
  # layers that gives errors around 1e-5 of the logit scale. A wrong or transposed
  # weight changes logits by O(scale), so 1e-3 of the scale separates the two.
  scale = max(1.0, float(np.max(np.abs(expected))))
  if not err <= 1e-3 * scale:
    raise ValueError(
        f"converted Flax GPT-2 in {str(dst)!r} disagrees with the PyTorch model in "
        f"{str(src)!r}: max |logit diff| {err:.3g} on logits of scale {scale:.3g}")
  return err


def convert_gpt2(src_dir: str | os.PathLike, dst_dir: str | os.PathLike,
                 force: bool = False, verify: bool = True) -> pathlib.Path:
  """Converts an HF PyTorch GPT-2 directory to a Flax one (weights + tokenizer).

  Args:
    src_dir: HF directory with config.json (model_type gpt2), PyTorch weights and
      tokenizer files.
    dst_dir: output directory; must not exist unless ``force``.
    force: replace an existing ``dst_dir``.
    verify: compare the logits of both models on a fixed random token sequence
      and raise if they differ beyond float32 round-off.

  Returns:
    The destination path.
  """
  import transformers  # pylint: disable=g-import-not-at-top

  src = pathlib.Path(src_dir).expanduser().resolve()
  dst = pathlib.Path(dst_dir).expanduser().resolve()
  config = _check_src(src)
  if src == dst:
    raise ValueError(f"source and destination are the same directory {str(src)!r}")
  if dst.exists() and not force:
    raise FileExistsError(f"destination {str(dst)!r} exists; pass force=True (--force) to replace it")
  dst.parent.mkdir(parents=True, exist_ok=True)

  def write(tmp_dir: str) -> None:
    tmp = pathlib.Path(tmp_dir)
    # transformers' own PyTorch -> Flax mapping (it needs _do_init=True).
    model = transformers.FlaxGPT2LMHeadModel.from_pretrained(str(src), from_pt=True)
    model.save_pretrained(str(tmp))
    del model
    if not (tmp / FLAX_WEIGHTS).is_file():
      raise RuntimeError(f"transformers did not write {FLAX_WEIGHTS} into {str(tmp)!r}")
    for name in TOKENIZER_FILES:
      if (src / name).is_file():
        shutil.copy2(src / name, tmp / name)
    if verify:
      _verify(src, tmp, vocab_size=config["vocab_size"],
              n_positions=config.get("n_positions", _VERIFY_LENGTH))

  # dst is either the old or the new directory at every moment.
  fs.write_then_swap(str(dst), write, label="partial")
  return dst


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m convert.gpt2",
      description="Convert an HF PyTorch GPT-2 directory (e.g. gpt2-large) to Flax weights "
                  "+ tokenizer for the Gen-PPL judge (tokendrift_jax.eval.genppl).")
  parser.add_argument("src", metavar="SRC", help="HF GPT-2 directory with PyTorch weights")
  parser.add_argument("dst", metavar="DST", help="output directory")
  parser.add_argument("--force", action="store_true", help="replace an existing DST")
  parser.add_argument("--no-verify", dest="verify", action="store_false",
                      help="skip the PyTorch-vs-Flax logit check")
  args = parser.parse_args(argv)
  try:
    dst = convert_gpt2(args.src, args.dst, force=args.force, verify=args.verify)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"converted GPT-2 {args.src} -> {dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
