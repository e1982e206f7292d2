"""What Gen-PPL judging costs with and without chunk buckets (``launch/bench_judge.py``).

Judges the same decoded samples twice with :class:`eval.genppl.GenPPLEvaluator`: every
chunk at the judge's full context (the released evaluations' cost) and at the bucket widths
of the evaluation config (the default). Reports judged token positions (rows x width of
every jitted call), Gen-PPL and wall time of each; the Gen-PPL must agree, the positions
shrink by context / sample length. Prints; asserts nothing.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class JudgeCost:
  label: str
  buckets: tuple[int, ...]
  judged_positions: int
  gen_ppl: float
  seconds: float


def random_judge(directory: str, tokenizer_dir: str, *, context: int = 1024, width: int = 16,
                 seed: int = 0) -> str:
  """A random one-layer Flax GPT-2 with ``tokenizer_dir``'s tokenizer, saved as a judge
  directory (what ``python -m convert.gpt2`` writes): the cost does not depend on the
  weights, so no download is needed."""
  import shutil  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=context, n_embd=width,
                                n_layer=1, n_head=2, bos_token_id=tok.eos_token_id,
                                eos_token_id=tok.eos_token_id)
  transformers.FlaxGPT2LMHeadModel(cfg, seed=seed).save_pretrained(directory)
  for f in os.listdir(tokenizer_dir):
    if f.endswith((".json", ".txt")) and f != "config.json":
      shutil.copyfile(os.path.join(tokenizer_dir, f), os.path.join(directory, f))
  return directory


def measure(judge_dir: str, *, num_samples: int, length: int, batch: int,
            buckets: tuple[int, ...], seed: int = 0) -> list[JudgeCost]:
  """Judges ``num_samples`` random-id samples of ``length`` GPT-2 tokens (decoded with the
  judge's tokenizer, as the evaluation decodes) at full context and with ``buckets``."""
  # pylint: disable=import-outside-toplevel
  from tokendrift_jax.eval import genppl
  from tokendrift_jax.eval import judges
  model = genppl.load_gpt2(judge_dir)
  rng = np.random.default_rng(seed)
  # Ids below EOS: ordinary text pieces, so retokenization keeps about `length` tokens.
  ids = rng.integers(0, model.eos_id, size=(num_samples, length)).astype(np.int32)
  texts = judges.decode_texts(model.tokenizer, ids, clean_up_tokenization_spaces=True)
  rows = []
  for label, bks in (("full context", ()), ("buckets", tuple(buckets))):
    evaluator = genppl.GenPPLEvaluator(model, max_length=length, batch_size=batch,
                                       buckets=bks, progress=False)
    evaluator.score(texts[:batch], group_size=batch)   # compile outside the timing
    t0 = time.perf_counter()
    r = evaluator.score(texts, group_size=batch)
    rows.append(JudgeCost(label, bks, r.judged_positions, r.gen_ppl,
                          time.perf_counter() - t0))
  return rows


def table(rows: list[JudgeCost], *, context: int, length: int) -> str:
  lines = [f"judge context {context}, samples of {length} tokens",
           f"{'judging':<14} {'buckets':<18} {'judged positions':>17} {'Gen-PPL':>12} "
           f"{'seconds':>8}"]
  for r in rows:
    lines.append(f"{r.label:<14} {str(list(r.buckets)):<18} {r.judged_positions:>17} "
                 f"{r.gen_ppl:>12.6f} {r.seconds:>8.2f}")
  if len(rows) == 2 and rows[1].judged_positions:
    lines.append(f"positions ratio {rows[0].judged_positions / rows[1].judged_positions:.1f}x, "
                 f"Gen-PPL relative difference "
                 f"{abs(rows[1].gen_ppl - rows[0].gen_ppl) / rows[0].gen_ppl:.1e}")
  return "\n".join(lines)


def run(*, judge: str, tokenizer: str, context: int, num_samples: int, length: int,
        batch: int, buckets: tuple[int, ...]) -> str:
  """The report for ``judge`` (a judge directory), or for a random judge built with
  ``tokenizer`` at ``context`` when ``judge`` is empty."""
  with tempfile.TemporaryDirectory() as tmp:
    if not judge:
      judge = random_judge(os.path.join(tmp, "judge"), tokenizer, context=context)
    from tokendrift_jax.eval import genppl  # pylint: disable=import-outside-toplevel
    context = genppl.load_gpt2(judge).context_size
    rows = measure(judge, num_samples=num_samples, length=length, batch=batch,
                   buckets=buckets)
  return table(rows, context=context, length=length)
