"""One factor at a time on the study's testbed, MDLM, tuning seed 0 (issue "science", item 3).

``python launch/train.py --config=configs/study_small_factors.py``   (runs/study_small_factors)

Which factor changes the shape of the refinement curve (transient vs progressive)? Each
variant is the main comparison's TokenDrift stage (configs/study_small_mdlm.py: 200 steps
at lr 1e-4, global batch 64 in micro-batches of 8, queues of 1024) with one thing changed,
run on tuning seed 0 only (the reported seeds 1-3 are not used to choose anything), with
its curve every 25 steps. It starts from the main study's finished pretraining
(``pretrain.workdir``: run configs/study_small_mdlm.py first; that directory is only read).

Fixed before any of them ran (named in the order they run: a config's variants run in
the order of their names):

* ``f1_scale_fixed``: V(τ) divided by constants instead of its batch RMS (``drift.scale_mode =
  "fixed"``), so the drift can shrink near equilibrium; the constants are the RMS measured
  at step 10 of the main study's TokenDrift seed 1 (metrics ``scale/tau=…``: 0.893, 0.661,
  0.134; seed 2 gave 0.880, 0.623, 0.121);
* ``f2_tau_relative``: temperatures relative to the measured feature distances
  (``temperature_mode = "relative"``: τ × the batch's median nearest-positive distance),
  at 0.2, 0.5, 2.0, i.e. the absolute 0.02, 0.05, 0.2 at the mean nearest-positive
  distance of the first steps (0.105 at step 10 of seed 1, 0.112 of seed 2);
* ``f3_lr_3e-5``, ``f7_lr_3e-4``: the learning rate (the paper's 3e-5, and 3× the study's);
* ``f4_ema``: the same training as TokenDrift seed 0 (bitwise), its curve and evaluation read
  from the EMA weights (decay 0.999 with the repositories' warm-up) instead of the raw ones;
* ``f5_queue_fresh``: queues of 64 features, i.e. every slot refilled at every step (64
  features per step): no stale generated features (default 1024: 16 steps old);
* ``f6_dropout_01``: dropout 0.1 while refining, as the released checkpoints were trained
  (pretraining here used none);
* ``f8_batch_32``, ``f9_batch_128``: the global batch (4 and 16 micro-batches of 8) at lr 1e-4.

The final evaluation reads τ = 1 only (the curves carry the result); the factor runs'
verdict is read from the curves against ``drift_seed0`` (docs/REPRODUCTION.md).
"""

from configs import study_small_mdlm

FACTORS = {
    "f1_scale_fixed": {"drift": {"scale_mode": "fixed", "fixed_scale": (0.893, 0.661, 0.134)}},
    "f2_tau_relative": {"drift": {"temperature_mode": "relative",
                               "temperatures": (0.2, 0.5, 2.0)}},
    "f3_lr_3e-5": {"optim": {"lr": 3e-5}},
    "f4_ema": {"ema": {"evaluate": "ema"}},
    "f5_queue_fresh": {"drift": {"queue_size": 64}},
    "f6_dropout_01": {"model": {"dropout": 0.1}},
    "f7_lr_3e-4": {"optim": {"lr": 3e-4}},
    "f8_batch_32": {"batch": {"global_batch": 32}},
    "f9_batch_128": {"batch": {"global_batch": 128}},
}


def get_config():
  c = study_small_mdlm.get_config()
  c.workdir = "runs/study_small_factors"
  c.pretrain.workdir = "runs/study_small_mdlm"
  c.refine.update(dict(seeds=(0,), baselines=()))
  c.variants = FACTORS
  c.evaluation.temperatures = (1.0,)
  c.evaluation.reference_temperatures = ()
  return c
