"""Independent PyTorch (float64) reference of SDTT, written from the public code's logic.

Source read: ``jdeschena/sdtt``, ``src/sdtt/core/distill/multi_round_sdtt.py``
(``MultiRoundSDTT._subs_parameterization``, ``_teacher_logprobs_on_mask``, ``loss``, the four
``_mse`` / ``_tvd`` / ``_fwd_kl`` / ``_bwd_kl``, ``training_step`` and
``_student_to_teacher``), ``core/sampling/ancestral.py`` (``_compute_ddpm_update``,
``_ddpm_sample_update``, ``sample_categorical``) and ``core/diffusion/noise_schedule.py``
(log-linear noise, ε = 1e-3). Nothing here imports the project's JAX code: the denoiser is a
callable ``(x int64 [B, L] numpy, sigma float64 [B] numpy) -> logits [B, L, V]`` numpy, and
the Gumbel uniforms are given (``sample_categorical``'s ``torch.rand_like``, fixed).

Differences from the released code, both deliberate and documented:
* ``grid="described"`` gives the method's grid t, t − dt, ..., t − (n − 1) dt; ``"released"``
  the public code's ``t·space + (1 − t)·(t − n·dt)``.
* The losses take an explicit ``is_mask`` and return 0 when nothing is masked (torch's
  ``batchmean`` divides by zero there).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NEG_INFINITY = -1000000.0


def loglinear_sigma(t: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
  """LogLinearNoise.total_noise: −log1p(−(1 − ε) t)."""
  return -torch.log1p(-(1 - eps) * t)


def subs(logits: torch.Tensor, xt: torch.Tensor, mask_index: int) -> torch.Tensor:
  """_subs_parameterization on a float64 copy."""
  logits = logits.clone()
  logits[:, :, mask_index] += NEG_INFINITY
  logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
  unmasked = xt != mask_index
  logits[unmasked] = NEG_INFINITY
  logits[unmasked, xt[unmasked]] = 0
  return logits


def sample_categorical(q: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
  gumbel_norm = 1e-10 - (u + 1e-10).log()
  return (q / gumbel_norm).argmax(dim=-1)


def teacher_times(t_start: torch.Tensor, dt: float, n: int, sampling_eps: float,
                  grid: str) -> torch.Tensor:
  """[n, B] float64 start times of the teacher's steps, clamped at sampling_eps."""
  t_start = t_start[None, :].double()
  if grid == "released":
    space = torch.linspace(1, 0, n).double()[:, None]
    t_end = t_start - dt * n
    ts = t_start * space + (1 - t_start) * t_end
  elif grid == "described":
    ts = torch.stack([t_start[0] - k * dt for k in range(n)])
  else:
    raise ValueError(grid)
  return torch.maximum(ts, torch.tensor(sampling_eps, dtype=torch.float64))


def teacher_logprobs_on_mask(denoiser, xt, t_start, dt: float, uniforms, *, mask_index: int,
                             n: int = 2, sampling_eps: float = 1e-3, eps: float = 1e-3,
                             grid: str = "described"):
  """_teacher_logprobs_on_mask with the ancestral sampler, in float64.

  Returns (targets [B, L, V], x after n steps [B, L], step [B, L]: the step at which each
  token was unmasked, −1 if never), all numpy.
  """
  xt = torch.as_tensor(np.array(xt), dtype=torch.int64)
  t_start = torch.as_tensor(np.asarray(t_start, np.float64))
  ts = teacher_times(t_start, dt, n, sampling_eps, grid)
  b, length = xt.shape
  teacher_predictions = None
  unmasked_tokens = torch.zeros(xt.shape, dtype=torch.float64)
  step_of = torch.full(xt.shape, -1, dtype=torch.int64)
  curr_x = xt
  log_p_x0 = None
  for idx in range(len(ts)):
    t = ts[idx]
    # _compute_ddpm_update: move chances of t and t - dt, the model fed sigma(t).
    sigma_t = loglinear_sigma(t, eps)
    sigma_s = loglinear_sigma(t - dt, eps)
    move_chance_t = (1 - torch.exp(-sigma_t))[:, None, None]
    move_chance_s = (1 - torch.exp(-sigma_s))[:, None, None]
    logits = torch.as_tensor(np.asarray(denoiser(curr_x.numpy(), sigma_t.numpy()),
                                        np.float64))
    log_p_x0 = subs(logits, curr_x, mask_index)
    if teacher_predictions is None:
      teacher_predictions = torch.zeros_like(log_p_x0)
    q_xs = log_p_x0.exp() * (move_chance_t - move_chance_s)
    q_xs[:, :, mask_index] = move_chance_s[:, :, 0]
    update = sample_categorical(q_xs, torch.as_tensor(np.asarray(uniforms[idx], np.float64)))
    # _ddpm_sample_update
    copy_flag = (curr_x != mask_index).to(curr_x.dtype)
    new_batch = copy_flag * curr_x + (1 - copy_flag) * update
    updated = curr_x != new_batch
    teacher_predictions[updated] = log_p_x0[updated]
    unmasked_tokens += updated
    step_of[updated] = idx
    curr_x = new_batch
  last = (curr_x == mask_index) * torch.logical_not(unmasked_tokens)
  teacher_predictions = torch.where(last[..., None].to(bool), log_p_x0, teacher_predictions)
  assert teacher_predictions.shape == (b, length, log_p_x0.shape[-1])
  return teacher_predictions.numpy(), curr_x.numpy(), step_of.numpy()


def student_logprobs(logits, xt, mask_index: int) -> np.ndarray:
  """The student's forward: SUBS of its logits at xt (float64)."""
  xt = torch.as_tensor(np.array(xt), dtype=torch.int64)
  return subs(torch.as_tensor(np.asarray(logits, np.float64)), xt, mask_index).numpy()


def distill_loss(mode: str, student, target, is_mask) -> float:
  """MultiRoundSDTT.loss after the forwards: gather the masked rows, apply _loss_fn."""
  is_mask = torch.as_tensor(np.asarray(is_mask, bool))
  if not bool(is_mask.any()):
    return 0.0
  preds = torch.as_tensor(np.asarray(student, np.float64))[is_mask]
  target = torch.as_tensor(np.asarray(target, np.float64))[is_mask]
  if mode == "mse":
    loss = F.mse_loss(preds, target)
  elif mode == "tvd":
    loss = (preds - target).abs().sum(-1).mean()
  elif mode == "kl-fwd":
    loss = F.kl_div(preds, target, log_target=True, reduction="batchmean")
  elif mode == "kl-bwd":
    loss = F.kl_div(target, preds, log_target=True, reduction="batchmean")
  else:
    raise ValueError(mode)
  return float(loss)


class RoundSchedule:
  """The round logic of ``training_step`` / ``_student_to_teacher`` (no EMA on growth).

  ``before_step(global_step, student)`` is what runs at the top of the step that finds
  ``global_step`` optimizer steps done: it may grow dt and copy the student into the
  teacher, and says whether the released run stops there. ``dt`` is then the step's dt.
  """

  def __init__(self, *, initial_sampling_steps: int = 1024, num_distill_steps: int = 2,
               min_sampling_steps: int = 8, grow_dt_every: int = 10_000,
               sampling_eps: float = 1e-3, teacher=None):
    self.tot = initial_sampling_steps
    self.n = num_distill_steps
    self.min = min_sampling_steps
    self.every = grow_dt_every
    self.sampling_eps = sampling_eps
    self.dt = (1 - sampling_eps) / initial_sampling_steps
    self.round = 0
    self.teacher = teacher

  def before_step(self, global_step: int, student) -> bool:
    """Returns True when the released run would stop (sys.exit) at this step."""
    if global_step > 0 and global_step % self.every == 0:
      curr_round = global_step // self.every
      self.dt = (1 - self.sampling_eps) / self.tot * (self.n ** curr_round)
      if round(1 / self.dt) < self.min:
        return True
      self.round = curr_round
      self.teacher = student
    return False
