"""Fingerprints of tiny training runs, to show that a refactor changed nothing.

``python launch/fingerprint.py OUT_DIR`` builds tiny runs (MDLM/DUO, TokenDrift and
continuation, one device and an (4, 2) FSDP mesh of 8 simulated devices, prompted LLaDA),
writes each jitted step's lowered StableHLO text (``OUT_DIR/<case>.hlo``) and, in
``OUT_DIR/fingerprint.json``, the sha256 of that text, the logged losses and the sha256 of
the final checkpoint's parameters, optimizer state, EMA and auxiliary state. Run it on two
commits and compare with ``--compare OTHER_DIR``; ``--rename OLD=NEW`` maps pytree names
that a refactor renamed (they appear in the text as ``jax.result_info`` annotations).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))

# pylint: disable=wrong-import-position
import jax
import numpy as np

from helpers import tiny_run  # the tests' tiny backbones and configs
from tokendrift_jax.train import builder
from tokendrift_jax.train import trainer

CASES = {
    "mdlm_drift": lambda d: tiny_run.tiny_config(d, "mdlm", "drift"),
    "mdlm_cont": lambda d: tiny_run.tiny_config(d, "mdlm", "continuation"),
    "duo_drift": lambda d: tiny_run.tiny_config(d, "duo", "drift"),
    "duo_cont_fsdp": lambda d: tiny_run.tiny_config(d, "duo", "continuation", mesh_shape=(4, 2),
                                                    param_sharding="fsdp"),
    "mdlm_drift_fsdp": lambda d: tiny_run.tiny_config(d, "mdlm", "drift", mesh_shape=(4, 2),
                                                      param_sharding="fsdp"),
    "llada_drift_prompt": lambda d: tiny_run.tiny_llada_run_config(d, "drift", steps=2,
                                                                   prompt_mode="data"),
    "llada_cont_prompt": lambda d: tiny_run.tiny_llada_run_config(d, "continuation", steps=2,
                                                                  prompt_mode="data"),
}


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()[:16]


def tree_sha(tree) -> str:
  h = hashlib.sha256()
  for x in jax.tree.leaves(tree):
    a = np.asarray(jax.device_get(x))
    h.update(str(a.dtype).encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def fingerprint(name: str, out_dir: str) -> dict:
  tmp = tempfile.mkdtemp()
  config = CASES[name](os.path.join(tmp, "data"))
  parts = builder.build_step(config)
  text = parts.step_fn.lower(*parts.abstract_args()).as_text()
  with open(os.path.join(out_dir, f"{name}.hlo"), "w", encoding="utf-8") as f:
    f.write(text)
  workdir = os.path.join(tmp, "run")
  trainer.train(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
  run = trainer.build(config, workdir)
  trainer.maybe_resume(run)
  st = run.state
  aux = st.aux if hasattr(st, "aux") else st.queues  # the name before the objective contract
  rec = {"hlo": _sha(text.encode()), "losses": losses, "params": tree_sha(st.params),
         "opt": tree_sha(st.opt_state), "ema": tree_sha(st.ema_params), "aux": tree_sha(aux),
         "step": int(st.step)}
  run.checkpointer.close()
  run.writer.close()
  return rec


def compare(a_dir: str, b_dir: str, renames: list[str]) -> int:
  with open(os.path.join(a_dir, "fingerprint.json"), encoding="utf-8") as f:
    a = json.load(f)
  with open(os.path.join(b_dir, "fingerprint.json"), encoding="utf-8") as f:
    b = json.load(f)
  bad = 0
  for name in a:
    texts = []
    for d in (a_dir, b_dir):
      with open(os.path.join(d, f"{name}.hlo"), encoding="utf-8") as f:
        texts.append(f.read())
    for rename in renames:
      old, new = rename.split("=", 1)
      texts = [t.replace(old, new) for t in texts]
    same_text = texts[0] == texts[1]
    diff = [k for k in a[name] if k != "hlo" and a[name][k] != b[name].get(k)]
    print(f"{name}: lowered text {'equal' if same_text else 'DIFFERENT'}"
          f"{' (after renames)' if renames else ''}; losses and state "
          f"{'bitwise equal' if not diff else 'DIFFERENT: ' + ', '.join(diff)}")
    bad += (not same_text) + bool(diff)
  return int(bad > 0)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("out_dir")
  p.add_argument("--compare", default="", help="an earlier OUT_DIR to compare with")
  p.add_argument("--rename", action="append", default=[],
                 help="OLD=NEW text substitution applied to both texts before comparing")
  p.add_argument("--cases", default=",".join(CASES))
  args = p.parse_args(argv)
  if args.compare and os.path.exists(os.path.join(args.out_dir, "fingerprint.json")):
    return compare(args.compare, args.out_dir, args.rename)
  os.makedirs(args.out_dir, exist_ok=True)
  out = {}
  for name in args.cases.split(","):
    if name not in CASES:
      p.error(f"--cases: unknown case {name!r}; expected some of {sorted(CASES)}")
    out[name] = fingerprint(name, args.out_dir)
    print(name, json.dumps(out[name]), flush=True)
  with open(os.path.join(args.out_dir, "fingerprint.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, indent=1)
  return compare(args.compare, args.out_dir, args.rename) if args.compare else 0


if __name__ == "__main__":
  sys.exit(main())
