"""The progressive-vs-transient study's testbed, MDLM (issue "science", items 2-4).

``python launch/train.py --config=configs/study_small_mdlm.py``   (runs/study_small_mdlm)

Sized by the compute plan in docs/REPRODUCTION.md ("The progressive-vs-transient study:
compute plan"), from step times measured on this 2-core machine: the largest of the
candidates measured there for which the whole study fits about 8 CPU-hours.

Against the reproduction testbed (configs/repro_small_mdlm.py: V = 250, L = 32, one topic
per sequence) the language has structure at three ranges and the sequences are twice as
long:

* local: each topic's order-1 sparse transitions (4 successors per context);
* segments: the topic is redrawn before each position with probability 1/32
  (``language.switch``), so a 64-token sequence holds about two topical segments;
* sequence: which 96 of the 500 tokens each topic uses.

The judge is the language's exact likelihood (forward recursion over topic paths,
tokendrift_jax/data/synthetic.py; checked against enumeration in the tests), fixed before
any run. Every stage checkpoints and resumes: ``timeout 40m python launch/train.py ...``
repeated runs the study in pieces of at most 40 minutes.
"""

from configs import repro_small_mdlm


def get_config():
  c = repro_small_mdlm.get_config()
  c.workdir = "runs/study_small_mdlm"
  c.variants = {}
  c.language.update(dict(seed=0, vocab_size=500, n_topics=16, order=1, successors=4,
                         topic_vocab_size=96, concentration=1.0, floor=0.01))
  c.language.switch = 1 / 32
  c.model.update(dict(vocab_size=501, hidden_size=128, cond_dim=64, n_blocks=4, n_heads=4,
                      length=64))
  c.corpus.update(dict(train_sequences=40_000, valid_sequences=512, seed=0))
  c.pretrain.update(dict(steps=2500, lr=1e-3, warmup_steps=50, global_batch=64,
                         micro_batch=64))
  c.train.checkpoint_every = 250   # resumable in pieces (a 40-minute piece is ~1300 steps)
  # The main comparison: 200 steps at global batch 64 (8 micro-batches of 8), three
  # reported seeds; SDTT at TokenDrift's model FLOPs beside them.
  c.refine.update(dict(steps=200, lr=1e-4, warmup_steps=0, global_batch=64, micro_batch=8,
                       seeds=(1, 2, 3), baselines=("sdtt",), baseline_rounds={"sdtt": 7}))
  c.evaluation.update(dict(nfe=(4, 8, 16), num_samples=256, batch=64,
                           temperatures=(0.85, 1.0, 1.15, 1.3)))
  # The pretrained model also colder, so that its frontier reaches the entropy of the
  # refined models' τ = 1 samples (frontier.against_reference): added after the first
  # evaluation, where TokenDrift's entropy (2.85-3.63) lay below the whole 0.85-1.3 sweep of
  # the pretrained model (3.81-4.01) and its own sweep never reached the pretrained model's.
  c.evaluation.reference_temperatures = (0.3, 0.45, 0.6, 0.7)
  # Refinement curves (issue 24 item 3: is the gain progressive or transient?): every
  # refinement stage sampled at steps 0, 25, ..., 200 with 128 samples per NFE and its own
  # seed, judged exactly; results.json "curves" and WORKDIR/curves_nfe{4,8,16}.png. A stage
  # finished without them is an error naming its directory (delete it: the retrained
  # weights are bitwise the same), or pass --config.refine.curve_every=0.
  c.refine.update(dict(curve_every=25, curve_samples=128))
  return c
