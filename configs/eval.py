"""Sample evaluation of a backbone checkpoint (Tables 1-2): ``launch/eval.py``.

    python launch/eval.py --config=configs/eval.py --config.checkpoint=DIR --workdir=OUT

Draws ``num_samples`` unconditional samples for every NFE in ``nfe`` and every seed in
``seeds``, and reports Gen-PPL (GPT-2 Large, MDLM/DUO protocol) and entropy as mean ± SD
over seeds. LLaDA checkpoints are evaluated the same way (decoded with the LLaDA tokenizer,
retokenized for the judge), unconditionally or completing given prompts (``prompt``). See
docs/EVALUATION.md.

Sample count: the paper does not state it. The backbones' own OpenWebText Gen-PPL scripts
(DUO repository, scripts/gen_ppl_owt_duo.sh, also _sedd.sh and _ar.sh) draw
``sampling.num_sample_batches=100`` batches of ``loader.eval_batch_size=8`` on one GPU,
i.e. 800 samples per (NFE, seed), retokenized 8 at a time; that is the default here.
(The DUO repository's gen_ppl_owt_mdlm.sh draws 4 x 16 = 64 samples, MDLM's own config
``num_sample_batches=2`` batches per GPU.)
"""

import ml_collections

from tokendrift_jax.eval import eval_config


def get_config() -> ml_collections.ConfigDict:
  c = eval_config.judge_config()
  # A converted backbone checkpoint directory (python -m convert SRC DST, or a training
  # run's WORKDIR/backbone). Required.
  c.checkpoint = ""
  # Row label in results.md / compare tables; "" = the checkpoint directory's name.
  c.label = ""
  c.nfe = (4, 8, 16)
  c.seeds = (0, 1, 2)
  # Sampling temperatures to sweep, e.g. (0.7, 0.8, 0.9, 1.0) (must hold 1, or LLaDA's
  # llada.temperature); () = 1 only. A sweep gives each run's Gen-PPL-entropy frontier, which
  # launch/compare.py reads at a reference run's entropy (docs/EVALUATION.md, "Gen-PPL at
  # matched entropy").
  c.temperatures = ()
  # Samples per (NFE, seed); 800 as the DUO repository's OWT Gen-PPL scripts (see above).
  c.num_samples = 800
  # Samples per sampler call, over all devices (a multiple of the device count). DUO
  # samples [B, L, V] in float64: 16 x 1024 x 50258 doubles are 6.6 GB per array.
  c.batch = 16
  # Sample length; 0 = the checkpoint's length.
  c.length = 0
  # (data, fsdp) or (data, fsdp, tensor) mesh, -1 = all devices; samples are split over
  # data x fsdp. param_sharding: "replicated" (every device holds the backbone), "fsdp"
  # (split over the fsdp axis) or "rules" (the family's logical-axis rules over fsdp and
  # tensor, docs/SHARDING.md), for backbones that do not fit one device (LLaDA-8B in
  # float32 is 32 GB).
  c.mesh = ml_collections.ConfigDict(dict(shape=(-1, 1), param_sharding="replicated"))
  c.attention_impl = ""
  # Multi-host (jax.distributed), as in configs/base.py: run the same command on every
  # host; each process samples and scores its share of every batch, process 0 writes.
  c.distributed = ml_collections.ConfigDict(dict(
      initialize="auto", coordinator_address="", num_processes=0, process_id=-1))
  # Prompt-conditioned evaluation (LLaDA backbones): sample i of every (NFE, seed)
  # completes the first `length` tokens of row i of `tokens`, an int .npy [N, >= length]
  # in the diffusion tokenizer's ids (e.g. held-out rows written like data.train_tokens);
  # N >= num_samples. The judge scores each completion given its prompt; config.length is
  # then the completion's length (0 = the checkpoint's length minus the prompt's).
  c.prompt = ml_collections.ConfigDict(dict(tokens="", length=0))
  # LLaDA's sampler (generate.py; eval_config.llada_sampler_config documents the fields).
  # Only read for LLaDA checkpoints.
  c.llada = eval_config.llada_sampler_config()
  c.write_samples = True
  c.progress = True
  return c
