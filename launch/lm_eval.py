"""Score a backbone on lm-evaluation-harness tasks:

  python launch/lm_eval.py --tasks=TASKS --output_dir=OUT \
      --model_args=checkpoint=DIR[,tokenizer=DIR,mc_num=128,batch_size=32,cfg=0,nfe=256]
      [--include_path=LOCAL_TASKS] [--limit=N] [--num_fewshot=K] [--log_samples]

Multiple-choice tasks are scored with LLaDA's Monte-Carlo masked-diffusion likelihood
(LLaDA, Dream) or the process's NELBO (MDLM, DUO); generation tasks with the family's
sampler at ``nfe`` steps. Writes ``OUT/lm_eval_results.json`` (beside launch/eval.py's
results.json when OUT is the same directory). User errors print one ``error: ...`` line
and exit with status 2. See docs/EVALUATION.md ("lm-evaluation-harness"); the work is done
by tokendrift_jax/eval/lm_eval_cli.py and tokendrift_jax/eval/lm_eval_adapter.py.
"""

from __future__ import annotations

import sys

from tokendrift_jax import malloc

if __name__ == "__main__":
  malloc.use_allocator_tunables()   # re-executes under glibc's allocator tunables (tokendrift_jax/malloc.py)
  from tokendrift_jax.eval import lm_eval_cli  # pylint: disable=import-outside-toplevel
  sys.exit(lm_eval_cli.run(sys.argv[1:]))
