"""Shared base of every training config (TokenDrift App. F defaults, MDLM backbone).

Each experiment file imports this, changes what it must and returns the ConfigDict; every
field can be overridden on the command line, e.g. ``--config.optim.lr=5e-5``.
"""

import ml_collections

from tokendrift_jax.data import input_pipeline
from tokendrift_jax.eval import eval_config
from tokendrift_jax.objectives import dcd
from tokendrift_jax.objectives import sdtt
from tokendrift_jax.train import optim


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # The training objective (tokendrift_jax/objectives/): "drift" (TokenDrift),
  # "continuation" (the backbone's own loss, same budget), or the few-step distillation
  # baselines "sdtt" (MDLM; section c.sdtt) and "dcd" (DUO; section c.dcd).
  c.objective = "drift"
  # A converted backbone (python -m convert SRC DST). The default names the released hub
  # model; this machine has no hub access, so point it at a local conversion.
  c.init_checkpoint = "kuleshov-group/mdlm-owt"

  # Architecture (must agree with init_checkpoint; `length` is the training length and may
  # be shorter than the checkpoint's) and how it computes. family: the key of the
  # architecture registry (tokendrift_jax/models/, models.get_family) that builds the network
  # from the other fields; "dit" = the MDLM/DUO diffusion transformer (models/dit.py).
  c.model = ml_collections.ConfigDict(dict(
      family="dit", vocab_size=50258, hidden_size=768, cond_dim=128, n_blocks=12, n_heads=12,
      length=1024, dropout=0.1, time_conditioning=False, mlp_ratio=4))
  # Compute dtype (parameters stay float32): "auto" = bfloat16 on a GPU or TPU, float32 on
  # CPU (where bf16 products are float32 products after conversions: slower, not faster;
  # docs/PERFORMANCE.md); "float32" or "bfloat16" on every platform.
  c.model.dtype = "auto"
  # "" = XLA's choice, "xla", "cudnn" (GPU flash), or "auto" (cudnn on a GPU in bf16,
  # else xla).
  c.model.attention_impl = ""
  c.model.remat = False
  # What a rematerialised block keeps (used only when remat is True): "" = save nothing
  # (jax's default), or a jax.checkpoint_policies name: "nothing_saveable",
  # "dots_saveable", "dots_with_no_batch_dims_saveable", "everything_saveable".
  c.model.remat_policy = ""
  c.model.scan_layers = True        # lax.scan over blocks: same function, faster compiles

  # The diffusion process the backbone was trained with and is refined under, its forward
  # process and time sampling (MDLM/DUO: eps 1e-3, antithetic, sampling_eps 1e-3).
  # process: "mdlm" = masked (absorbing state; the mask is the last token id) or
  # "duo" = uniform state (no mask token, time-conditioned network).
  c.diffusion = ml_collections.ConfigDict(dict(process="mdlm", eps=1e-3, sampling_eps=1e-3,
                                               antithetic=True))

  # TokenDrift (Sec. 3, App. F). objective: fixed_point | mirror_kl | mirror_mse.
  c.drift = ml_collections.ConfigDict(dict(
      objective="fixed_point", alpha=1.0, mirror_eta=1.0, temperatures=(0.02, 0.05, 0.2),
      attraction=1.0, repulsion=1.0, eps=1e-8, normalization="joint", distance="squared",
      lift="soft", encoder_sigma=0.0, queue_size=1024, base_loss_weight=0.0))
  # Positions averaged into the features h and u: "all" (the paper) or "completion" (only
  # the non-prompt positions; needs a prompt, see c.prompt).
  c.drift.pool = "all"
  # Study options (issue 24 item 3; the defaults are the paper's program). scale_mode: "rms"
  # (each temperature's V divided by its batch RMS, the paper) or "fixed" (by the constant
  # fixed_scale: one number, or one per temperature, e.g. the scale/tau=... metric measured
  # early in a run), which lets the drift shrink near equilibrium. temperature_mode:
  # "absolute" (the paper) or "relative" (each τ times the batch's median distance from an
  # anchor to its nearest positive). See tokendrift_jax/drift/field.py.
  c.drift.scale_mode = "rms"
  c.drift.fixed_scale = (1.0,)
  c.drift.temperature_mode = "absolute"
  # The distillation baselines' sections (fields documented in their objective files).
  c.sdtt = sdtt.default_config()
  c.dcd = dcd.default_config()

  # Prompt-conditioned refinement (a never-corrupted prompt; needs a process whose corrupt
  # takes keep=, i.e. "llada"). mode: "none" (unconditional, the paper); "prefix" (the
  # first `length` tokens of every training row); "data" (per-row prompt lengths from
  # <train_tokens stem>.prompt_lengths.npy next to data.train_tokens, data.kind="tokens":
  # SFT pairs). Continuation then trains LLaDA's SFT loss. pad_id: -1 (unpadded rows) or
  # the id of padded positions (not attended, never corrupted, lifted or pooled, no loss;
  # with mode "data" a left-padded prompt's length counts its pads; see train/prompt.py).
  c.prompt = ml_collections.ConfigDict(dict(mode="none", length=0, pad_id=-1))

  c.optim = optim.default_config()
  c.optim.lr = 3e-5
  # Adam's first moment in float32 (default) or bfloat16 (half its memory; see
  # train/optim.py and docs/SHARDING.md). A resume keeps the checkpoint's choice.
  c.optim.mu_dtype = "float32"

  # EMA as the backbone repositories train it (decay 0.9999, models/ema.py). warmup: the
  # repositories' min(decay, (1 + n) / (10 + n)) with n counted from this run's first step;
  # at step 13k it averages over roughly the last 1.4k steps. warmup=False applies the decay
  # from the first step, as when a repository run continues its own EMA: after 13k steps
  # that EMA still holds e^-1.3 ~ 27% of the released weights. Refinement runs therefore
  # export and evaluate the raw weights by default. evaluate: "raw" | "ema".
  c.ema = ml_collections.ConfigDict(dict(enabled=True, decay=0.9999, warmup=True,
                                         evaluate="raw"))

  # App. F: global batch 512; 8 fresh examples per micro-step (4 devices x 2).
  c.batch = ml_collections.ConfigDict(dict(global_batch=512, micro_batch=8,
                                           eval_global_batch=64))

  # (data, fsdp) or (data, fsdp, tensor) mesh (two entries: tensor = 1); -1 = all remaining
  # devices. Batches are split over data x fsdp; tensor splits the weights of each layer.
  # param_sharding: replicated | fsdp (the largest divisible axis over fsdp) | rules (the
  # family's logical axes: heads, mlp, vocab over tensor, embed over fsdp; docs/SHARDING.md;
  # needed for tensor > 1). num_devices > 0 uses only the first N devices (single-process
  # experiments only).
  c.mesh = ml_collections.ConfigDict(dict(shape=(-1, 1), param_sharding="replicated",
                                          num_devices=0))

  c.data = input_pipeline.default_config()
  c.data.kind = "text"              # "text" (tokenize source) or "tokens" (.npy arrays)
  c.data.train_tokens = ""          # kind=tokens: int32 [N, length] .npy of training rows
  c.data.valid_tokens = ""          # kind=tokens: the validation rows ("" = none)

  c.train = ml_collections.ConfigDict(dict(
      steps=13_000, log_every=50, checkpoint_every=1000, keep_checkpoints=3, resume=True,
      eval_every=1000, eval_batches=8, export_backbone=True, progress=True))
  # A non-finite update (params, optimizer state, EMA, queues or metrics; checked on the
  # device every step): "stop" ends the run with an error before anything non-finite is
  # saved (finite checkpoints are kept); "skip" keeps the previous state and counts the step
  # in the metric skipped_steps.
  c.train.nonfinite = "stop"

  # Sampling + judge during training (Fig. 2): the hook of tokendrift_jax/eval/hook.py.
  # Fields in tokendrift_jax/eval/eval_config.py (enabled, every, nfe, num_samples, batch,
  # seed, judge_kind, judge, judge_tokenizer, tokenizer, judge_dtype, ...).
  c.sample_eval = eval_config.sample_eval_config()

  # Multi-host (jax.distributed). Empty/0 = single process, or whatever the cluster
  # environment announces (SLURM, TPU, Open MPI) when initialize="auto".
  c.distributed = ml_collections.ConfigDict(dict(
      initialize="auto", coordinator_address="", num_processes=0, process_id=-1))
  return c
