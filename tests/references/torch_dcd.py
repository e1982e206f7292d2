"""A PyTorch float64 reference of DUO's discrete consistency distillation, for tests only.

Written from the public s-sahoo/duo code (``algo.py``: ``Distillation._sample_trajectory``,
``Distillation.nll``, ``Distillation._compute_dt``, ``Distillation._maybe_update_teacher_weights``,
``DUO._gamma_to_alphat_integral`` and the ``Integral`` lookup; ``utils.py``:
``_discrete_prob_map`` and ``_cache_prob_usdm_in_partition``), never from the JAX code:

* the γ → α map integrates p(γ) = ∫ φ(x − e^{−γ/2}) Φ(x)^{N−1} dx with ``scipy.integrate.quad``
  over (−∞, ∞) as ``utils._cache_prob_usdm_in_partition`` does (here with tight tolerances,
  at the requested γ itself rather than from a 10⁵-point table), α = (N p − 1)/(N − 1);
* the trajectory pair is the argmax of α_g e_{x₀} + σ_g ε with one ε, α_g = √sigmoid(−γ);
* the loss runs a given denoiser ``(tokens int64 [b, L], sigma float64 [b]) -> logits``
  for student and teacher and averages the per-token KL over every token;
* the schedule replays Lightning's global step: dt = 2^(g // K)/T and the teacher copy
  at g % K == 0, before the teacher's forward.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import integrate
from scipy import special


def p_keep(vocab_size: int, gamma: float) -> float:
  """P(argmax = x₀) at log-SNR γ (``utils._discrete_prob_map`` integrated by quad)."""
  snr_sqrt = np.exp(-gamma / 2)
  n = vocab_size

  def integrand(x):   # norm.pdf(x, loc=snr_sqrt) * norm.cdf(x) ** (n - 1)
    return np.exp(-0.5 * (x - snr_sqrt) ** 2) / np.sqrt(2 * np.pi) * special.ndtr(x) ** (n - 1)

  # Split at the integrand's bulk so that quad's adaptivity sees it.
  total = 0.0
  edges = [-np.inf, snr_sqrt - 10, snr_sqrt, snr_sqrt + 10, np.inf]
  for lo, hi in zip(edges[:-1], edges[1:]):
    val, _ = integrate.quad(integrand, lo, hi, epsabs=1e-15, epsrel=1e-13, limit=400)
    total += val
  return total


def alpha_of_gamma(vocab_size: int, gamma) -> torch.Tensor:
  """The uniform-state α(γ) (``DUO._gamma_to_alphat_integral``), float64 like γ."""
  g = torch.as_tensor(gamma, dtype=torch.float64)
  flat = [p_keep(vocab_size, float(x)) for x in g.reshape(-1)]
  p = torch.tensor(flat, dtype=torch.float64).reshape(g.shape)
  return (vocab_size * p - 1) / (vocab_size - 1)


def sample_trajectory(x0: torch.Tensor, gamma_t: torch.Tensor, gamma_s: torch.Tensor,
                      eps: torch.Tensor):
  """(x_t, x_s) latents float64 [b, L, V] with the one noise ``eps`` (``_sample_trajectory``)."""
  x0_oh = F.one_hot(x0, eps.shape[-1]).to(torch.float64)
  eps = eps.to(torch.float64)
  gt = gamma_t.to(torch.float64)[:, None, None]
  gs = gamma_s.to(torch.float64)[:, None, None]
  xt = torch.sigmoid(-gt).sqrt() * x0_oh + torch.sigmoid(gt).sqrt() * eps
  xs = torch.sigmoid(-gs).sqrt() * x0_oh + torch.sigmoid(gs).sqrt() * eps
  return xt, xs


def times(t0: torch.Tensor, dt: float, gamma_min: float, gamma_max: float):
  """``Distillation.nll``: t = clip(t0 + dt, 0, 1); γ_t at t and γ_s at t − dt."""
  t = torch.clip(t0.to(torch.float64) + dt, 0, 1)
  gamma_t = gamma_min + t * (gamma_max - gamma_min)
  gamma_s = gamma_min + (t - dt) * (gamma_max - gamma_min)
  return t, gamma_t, gamma_s


def dcd_loss(student, teacher, x0, t0, eps, dt, *, vocab_size, gamma_min=-4.0,
             gamma_max=-1.0, loss_type="kl-bwd"):
  """The DCD loss (``Distillation.nll`` + ``TrainerBase._loss``) and its intermediates.

  Args:
    student, teacher: ``(tokens int64 [b, L], sigma float64 [b]) -> logits [b, L, V]``.
    x0: int64 [b, L]; t0: [b] times before the dt shift; eps: [b, L, V] Gaussian noise.
  Returns: dict with loss, per_token, xt, xs (tokens), sigma_t, sigma_s, gamma_t, gamma_s.
  """
  _, gamma_t, gamma_s = times(t0, dt, gamma_min, gamma_max)
  alpha_t = alpha_of_gamma(vocab_size, gamma_t)
  alpha_s = alpha_of_gamma(vocab_size, gamma_s)
  zt, zs = sample_trajectory(x0, gamma_t, gamma_s, eps)
  xt, xs = zt.argmax(-1), zs.argmax(-1)
  sigma_t, sigma_s = -torch.log(alpha_t), -torch.log(alpha_s)
  with torch.no_grad():
    log_teacher = torch.log_softmax(teacher(xs, sigma_s).to(torch.float64), -1)
  log_student = torch.log_softmax(student(xt, sigma_t).to(torch.float64), -1)
  if loss_type == "kl-bwd":
    per_token = (log_student.exp() * (log_student - log_teacher)).sum(-1)
  elif loss_type == "kl-fwd":
    per_token = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
  else:
    raise ValueError(loss_type)
  valid = torch.ones_like(per_token)
  loss = (per_token * valid).sum() / valid.sum()
  return dict(loss=loss, per_token=per_token, xt=xt, xs=xs, sigma_t=sigma_t,
              sigma_s=sigma_s, gamma_t=gamma_t, gamma_s=gamma_s)


def compute_dt(global_step: int, update_teacher_every: int, T: int) -> float:  # pylint: disable=invalid-name
  """``Distillation._compute_dt`` (linear_growth_dt False)."""
  return 2 ** (global_step // update_teacher_every) / T


def replay_schedule(n_steps: int, update_teacher_every: int, T: int):  # pylint: disable=invalid-name
  """Per optimizer step g = 0 .. n_steps − 1: (dt, the step whose weights the teacher
  holds during step g). The teacher is copied at the start of step g when g % K == 0
  (``_teacher_logits`` → ``_maybe_update_teacher_weights``), i.e. it holds the weights the
  student had entering that step (its weights after g optimizer updates)."""
  out, teacher_from = [], None
  for g in range(n_steps):
    if teacher_from is None or g % update_teacher_every == 0:
      teacher_from = g
    out.append((compute_dt(g, update_teacher_every, T), teacher_from))
  return out
