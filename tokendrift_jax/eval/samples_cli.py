"""``launch/sample.py``: look at a backbone's samples, or two backbones' side by side.

``python launch/sample.py CKPT --tokenizer DIR [--nfe 8] [--seeds 0 1] [--num-samples 4]
[--compare CKPT2] [--out samples.jsonl]``

Draws ``--num-samples`` unconditional samples per seed at ``--nfe`` denoising steps with
the backbone's own sampler (:class:`sampling_eval.SampleEvaluator`: the same jitted
sampler, defaults and keys ``sample_key(seed, nfe, batch_index)`` as ``launch/eval.py``, so
with the same batch and length the texts are the ones it judges), decodes them with the
tokenizer as the process prepares it (DUO adds its [PAD]), prints one block per sample with
the seed and NFE in its header, and writes one JSON row per sample to ``--out``. With
``--compare CKPT2`` both checkpoints are sampled with the same keys and printed side by
side per (seed, sample), as in Fig. 3 of the paper.

``--prefix TEXT`` completes a prompt, for backbones whose process has a prompt-conditioned
sampler (``Process.prompted``: LLaDA): TEXT is tokenized as LLaDA's generate.py does
(``tokenizer(TEXT)["input_ids"]``, the tokenizer's own special tokens), every sample
completes those P ids with ``--length`` tokens (default: the backbone's length minus P)
through the process's ``make_generate``, as ``launch/eval.py`` completes the prompts of
``config.prompt`` (:class:`sampling_eval.SampleEvaluator` with ``prompt_length``: the same
sampler, keys and defaults). Rows hold the completion (``text``, ``token_ids``) and the
prompt (``prompt``, ``prompt_ids``); the printed block shows the prompt followed by its
completion. The MDLM / DUO DiTs here are unconditional and their samplers take no prompt,
so ``--prefix`` is refused for them rather than imitated. User errors are one
``error: ...`` line and exit status 2, before anything is sampled or written.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import sys
import textwrap
from typing import Callable

DEFAULT_MAX_BATCH = 64

Loader = Callable[[str], tuple]   # path -> (config, params, meta)


class SampleError(ValueError):
  """A one-line user error of launch/sample.py."""


def _default_loader(path: str):
  from tokendrift_jax import checkpoints  # pylint: disable=import-outside-toplevel
  return checkpoints.load_backbone_params(path)


def _default_reader(path: str):
  from tokendrift_jax import checkpoints  # pylint: disable=import-outside-toplevel
  return checkpoints.read_backbone_config(path)


def default_batch(num_samples: int, shards: int, max_batch: int = DEFAULT_MAX_BATCH) -> int:
  """min(num_samples, max_batch) rounded up to a multiple of the mesh's batch shards."""
  want = min(int(num_samples), max_batch)
  return max(shards, math.ceil(want / shards) * shards)


def draw(model_cfg, params, process, tokenizer, *, nfe: int, seeds, num_samples: int,
         batch: int, mesh, length: int | None = None, bar=None,
         clean_up_tokenization_spaces: bool = True, prompt=None) -> list[dict]:
  """Samples and decodes (as the judge does, :func:`judges.decode_texts`, special tokens
  kept or skipped as the backbone family's released code does); one row per sample
  (seed-major, then index).

  Args:
    prompt: None (unconditional samples), or int[P] ids every sample completes (a
      ``process.prompted`` backbone; ``length`` + P at most the backbone's length).

  Returns:
    dicts with seed, index, nfe, nfe_model (backbone forwards of the sample's batch),
    text and token_ids (int list of ``length``: with a prompt, the completion after it),
    and with a prompt also prompt (its decoded text) and prompt_ids.
  """
  # pylint: disable=import-outside-toplevel
  import numpy as np
  from tokendrift_jax import models
  from tokendrift_jax import sharding
  from tokendrift_jax.eval import judges
  from tokendrift_jax.eval import sampling_eval
  skip_special = models.family_of(model_cfg).skip_special_tokens
  decode = lambda ids: judges.decode_texts(
      tokenizer, ids, clean_up_tokenization_spaces=clean_up_tokenization_spaces,
      skip_special_tokens=skip_special)
  prompts, extra = None, {}
  if prompt is not None:
    prompt = np.asarray(prompt, np.int32).reshape(-1)
    prompts = np.tile(prompt[None, :], (num_samples, 1))   # [num_samples, P]
    extra = dict(prompt=decode(prompt[None, :])[0], prompt_ids=prompt.tolist())
  # No judge: only SampleEvaluator's sampler (and its key scheme) is used; with a prompt,
  # the process's make_generate, as launch/eval.py's prompted evaluation.
  evaluator = sampling_eval.SampleEvaluator(
      model_cfg, process, None, mesh=mesh, batch=batch, length=length, progress=False,
      prefix="launch/sample.py", prompt_length=0 if prompt is None else prompt.shape[0])
  params = sharding.to_global(params, sharding.param_sharding(params, mesh, "replicated"))
  rows = []
  for seed in seeds:
    tokens, nfe_model = evaluator.sample(params, nfe, seed, num_samples, bar, prompts)
    texts = decode(tokens)
    for i in range(tokens.shape[0]):
      rows.append(dict(seed=int(seed), index=i, nfe=int(nfe), nfe_model=nfe_model[i // batch],
                       text=texts[i], token_ids=tokens[i].tolist(), **extra))
  return rows


# ----------------------------------------------------------------------------- printing


def header(row: dict, num_samples: int, label: str | None = None) -> str:
  """``=== sample 2/4 | seed=0 | NFE=8 | LABEL ===`` (index 1-based)."""
  parts = [f"sample {row['index'] + 1}/{num_samples}", f"seed={row['seed']}",
           f"NFE={row['nfe']}"] + ([label] if label else [])
  return "=== " + " | ".join(parts) + " ==="


def printable(text: str) -> str:
  """``text`` with control characters other than newlines (a random or byte-level model
  emits them) shown as U+FFFD, so a sample cannot move the cursor or ring the terminal."""
  return "".join(c if c == "\n" or c.isprintable() else "\ufffd" for c in text)


def _wrap(text: str, width: int) -> list[str]:
  # Paragraph by paragraph, so a sample's own line breaks survive.
  lines = []
  for para in printable(text).split("\n"):
    lines.extend(textwrap.wrap(para, width=width, replace_whitespace=False,
                               drop_whitespace=True) or [""])
  return lines


def _shown(row: dict) -> str:
  """The text a block shows: a prompted sample's prompt, then its completion."""
  return row.get("prompt", "") + row["text"]


def format_samples(rows: list[dict], num_samples: int, label: str, width: int) -> str:
  """One block per sample: its header, then the text (after its prompt, if any) wrapped at
  ``width``."""
  blocks = [header(r, num_samples, label) + "\n" + "\n".join(_wrap(_shown(r), width))
            for r in rows]
  return "\n\n".join(blocks) + "\n"


def format_side_by_side(rows_a: list[dict], rows_b: list[dict], num_samples: int,
                        labels: tuple[str, str], width: int) -> str:
  """One block per (seed, sample) with checkpoint A's text left of B's.

  Raises:
    SampleError: the rows are not for the same (seed, index) pairs.
  """
  col = max(10, (width - 3) // 2)
  blocks = []
  for a, b in zip(rows_a, rows_b):
    if (a["seed"], a["index"], a["nfe"]) != (b["seed"], b["index"], b["nfe"]):
      raise SampleError(f"internal: unaligned samples {a['seed'], a['index']} vs "
                        f"{b['seed'], b['index']}")
    lines = [header(a, num_samples),
             f"{('A: ' + labels[0])[:col]:<{col}} | {('B: ' + labels[1])[:col]}"]
    for la, lb in itertools.zip_longest(_wrap(_shown(a), col), _wrap(_shown(b), col),
                                        fillvalue=""):
      lines.append(f"{la:<{col}} | {lb}".rstrip())
    blocks.append("\n".join(lines))
  return "\n\n".join(blocks) + "\n"


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python launch/sample.py", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("checkpoint", metavar="CKPT", help="a backbone checkpoint directory")
  p.add_argument("--tokenizer", required=True,
                 help="local tokenizer directory (e.g. a saved GPT-2 tokenizer)")
  p.add_argument("--nfe", type=int, default=8, help="denoising steps (default 8)")
  p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds (default 0)")
  p.add_argument("--num-samples", type=int, default=4, help="samples per seed (default 4)")
  p.add_argument("--batch", type=int, default=0,
                 help="samples per sampler call (default: num-samples, up to 64, rounded "
                      "to the device count); the samples depend on it")
  p.add_argument("--length", type=int, default=0, help="sample length (default: the model's)")
  p.add_argument("--compare", metavar="CKPT2",
                 help="a second checkpoint, sampled with the same keys and printed beside")
  p.add_argument("--prefix", help="a prompt every sample completes, for backbones with a "
                                  "prompt-conditioned sampler (LLaDA; the MDLM / DUO DiTs "
                                  "are unconditional)")
  p.add_argument("--weights", choices=("raw", "ema"),
                 help="training checkpoints: the trained (raw, default) or EMA weights")
  p.add_argument("--out", default="samples.jsonl", help="JSON lines output (default "
                                                        "./samples.jsonl)")
  p.add_argument("--force", action="store_true", help="replace an existing --out")
  p.add_argument("--devices", type=int, default=0,
                 help="sample on the first N local devices (default 0: all)")
  p.add_argument("--width", type=int, default=0, help="print width (default: the terminal's)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--raw-decode", action="store_true",
                 help="decode without the space cleanup of transformers 4.38's default "
                      "(which the released evaluations and the judge use)")
  return p


def _labels(paths: list[str]) -> list[str]:
  """Short names of the checkpoints: the last path component, or the last two when the
  last ones agree (runs/a/backbone vs runs/b/backbone)."""
  parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
  for n in (1, 2, 3):
    labels = ["/".join(p[-n:]) for p in parts]
    if len(set(labels)) == len(labels):
      return labels
  return [os.path.abspath(p) for p in paths]


def _check_int(value: int, name: str, minimum: int) -> None:
  if value < minimum:
    raise SampleError(f"{name}={value} must be >= {minimum}")


def run(argv: list[str] | None = None, *, reader: Callable | None = None,
        loader: Callable | None = None, stdout=None) -> int:
  """The CLI. ``reader(path, weights) -> (config, meta)`` and ``loader(path, weights) ->
  (config, params, meta)`` resolve a checkpoint (default: backbone checkpoint directories;
  launch/sample.py passes convert.export's, which also reads training checkpoints)."""
  args = build_parser().parse_args(argv)
  stdout = stdout or sys.stdout
  # pylint: disable=import-outside-toplevel
  from tokendrift_jax import checkpoints
  try:
    return _run(args, reader, loader, stdout)
  except (SampleError, checkpoints.CheckpointError, FileNotFoundError, ValueError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _prompt_ids(args, paths, heads, processes, tokenizer):
  """(int32[P] ids of --prefix, the completion length) after the checks that need the
  tokenizer: P >= 1, P + the completion length within every backbone's length, ids the
  tokenizer has and no mask id (a prompt is clean text). One-line SampleErrors."""
  # pylint: disable=import-outside-toplevel
  import numpy as np
  from tokendrift_jax.eval import judges
  # As LLaDA's generate.py: tokenizer(prompt)["input_ids"], the tokenizer's special tokens.
  ids = np.asarray(tokenizer(args.prefix)["input_ids"], np.int32).reshape(-1)
  if ids.size == 0:
    raise SampleError(f"--prefix {args.prefix!r} has no tokens under the tokenizer "
                      f"{args.tokenizer!r}")
  p = int(ids.size)
  room = min(cfg.length for cfg, _ in heads) - p
  if room < 1:
    raise SampleError(f"--prefix is {p} tokens; the backbone's length "
                      f"{min(cfg.length for cfg, _ in heads)} leaves no room for a "
                      f"completion (give a shorter prefix)")
  length = args.length or room   # default: all the room the (shorter) backbone leaves
  if not 1 <= length <= room:
    raise SampleError(f"--length {length} must be in [1, {room}] (the backbone's length "
                      f"{min(cfg.length for cfg, _ in heads)} minus the {p} tokens of "
                      f"--prefix)")
  for path, process in zip(paths, processes):
    try:
      judges.check_text_ids(ids[None, :], process, len(tokenizer))
    except ValueError as e:
      raise SampleError(f"--prefix: {e} (for {path})") from e
    if process.mask_id is not None and np.any(ids == process.mask_id):
      raise SampleError(f"--prefix {args.prefix!r} contains the mask token (id "
                        f"{process.mask_id}); a prompt must be clean text")
  return ids, length


def _run(args, reader, loader, stdout) -> int:
  # pylint: disable=import-outside-toplevel
  from tokendrift_jax import checkpoints
  reader = reader or (lambda path, weights: _default_reader(path))
  loader = loader or (lambda path, weights: _default_loader(path))
  _check_int(args.nfe, "--nfe", 1)
  _check_int(args.num_samples, "--num-samples", 1)
  _check_int(args.batch, "--batch", 0)
  _check_int(args.devices, "--devices", 0)
  for s in args.seeds:
    _check_int(s, "--seeds", 0)
  from tokendrift_jax import fs
  out = os.path.abspath(args.out)
  if not os.path.isdir(os.path.dirname(out)):
    raise SampleError(f"--out {out}: the directory {os.path.dirname(out)} does not exist")
  # Before anything is sampled: --out is a file that can be written, and an existing one is
  # replaced (with --force) only when it holds earlier samples.
  try:
    fs.check_replace(out, force=args.force, kind="file", what="--out")
    fs.check_writable_destination(out, kind="file", create_parents=False)
  except fs.DestinationError as e:
    raise SampleError(f"--out: {e}") from e
  paths = [args.checkpoint] + ([args.compare] if args.compare else [])
  if args.prefix is not None and not args.prefix:
    raise SampleError("--prefix is empty; give the text every sample completes, or leave "
                      "--prefix out for unconditional samples")
  # Cheap checks of every checkpoint before any weights are read or sampled.
  from tokendrift_jax.diffusion import registry as process_registry
  heads = []
  for path in paths:
    cfg, meta = reader(path, args.weights)
    process = checkpoints.checkpoint_process(meta, path)
    if args.prefix is not None and not process_registry.get(process).prompted:
      raise SampleError(
          f"--prefix: {path} is a {meta.get('family', 'dit')} backbone with the {process} "
          f"process, which is unconditional; its sampler takes no prompt or prefix, so "
          f"sample without --prefix")
    length = args.length or cfg.length
    if not 1 <= length <= cfg.length:
      raise SampleError(f"--length {length} must be in [1, {cfg.length}] (the length of "
                        f"{path})")
    heads.append((cfg, process))
  length = args.length or heads[0][0].length
  if len(heads) == 2 and length > heads[1][0].length and args.prefix is None:
    raise SampleError(f"--compare {args.compare}: its length {heads[1][0].length} is shorter "
                      f"than the samples of {args.checkpoint} ({length}); pass --length")
  if not os.path.isdir(os.path.expanduser(args.tokenizer)):
    raise SampleError(f"--tokenizer {args.tokenizer}: no such directory (a local tokenizer "
                      f"directory; this code does not download)")

  import tqdm
  from tokendrift_jax import diffusion, sharding
  from tokendrift_jax.data import tokenizer as tok_lib
  from tokendrift_jax.eval import files, judges
  import jax
  devices = jax.local_devices()
  if args.devices > len(devices):
    raise SampleError(f"--devices {args.devices}: only {len(devices)} local devices exist")
  mesh = sharding.make_mesh(devices=devices[:args.devices] if args.devices else devices)
  shards = sharding.num_batch_shards(mesh)
  batch = args.batch or default_batch(args.num_samples, shards)
  # A batch far above --num-samples would draw (and hold in memory) rows thrown away: one
  # above both the sample count and DEFAULT_MAX_BATCH is capped at the sample count (a
  # smaller one is kept: the samples depend on the batch, and it may be chosen to match).
  cap = max(shards, math.ceil(args.num_samples / shards) * shards)
  if batch > max(cap, DEFAULT_MAX_BATCH):
    batch = cap
  if batch % shards:
    raise SampleError(f"--batch {batch} does not divide over the {shards} devices")
  processes, tokenizers = [], []
  for path, (cfg, name) in zip(paths, heads):
    process = diffusion.make_process_for_model(name, cfg)
    # One tokenizer per checkpoint: DUO's prepare_tokenizer adds [PAD] in place.
    tokenizer = process.prepare_tokenizer(tok_lib.load_tokenizer(args.tokenizer,
                                                                 field="--tokenizer"))
    judges.check_vocab(process, len(tokenizer), f"the tokenizer {args.tokenizer!r} (for {path})")
    processes.append(process)
    tokenizers.append(tokenizer)
  prompt = None
  if args.prefix is not None:
    prompt, length = _prompt_ids(args, paths, heads, processes, tokenizers[0])

  num_batches = math.ceil(args.num_samples / batch)
  bar = tqdm.tqdm(total=len(paths) * len(args.seeds) * num_batches, unit="batch",
                  desc=f"sampling NFE={args.nfe}", disable=args.no_progress,
                  dynamic_ncols=True, file=sys.stderr)
  results = []
  labels = _labels(paths)
  try:
    for path, label, (cfg, name), process, tokenizer in zip(paths, labels, heads, processes,
                                                             tokenizers):
      bar.set_description(f"sampling {os.path.basename(os.path.normpath(path))} "
                          f"NFE={args.nfe}")
      _, params, _ = loader(path, args.weights)
      rows = draw(cfg, params, process, tokenizer, nfe=args.nfe, seeds=args.seeds,
                  num_samples=args.num_samples, batch=batch, mesh=mesh, length=length,
                  bar=bar, clean_up_tokenization_spaces=not args.raw_decode, prompt=prompt)
      for r in rows:
        r.update(checkpoint=os.path.abspath(path), label=label, process=name, batch=batch,
                 length=length)
      results.append(rows)
  finally:
    bar.close()

  width = args.width or shutil.get_terminal_size((100, 24)).columns
  if len(results) == 1:
    text = format_samples(results[0], args.num_samples, results[0][0]["label"], width)
  else:
    text = format_side_by_side(results[0], results[1], args.num_samples,
                               (results[0][0]["label"], results[1][0]["label"]), width)
  stdout.write(text)
  files.write_jsonl(out, [r for rows in results for r in rows])
  print(f"wrote {sum(len(r) for r in results)} samples to {out}", file=sys.stderr)
  return 0
