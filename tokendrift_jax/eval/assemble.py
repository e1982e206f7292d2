"""The one place a sample evaluator is assembled from a config section: the judge the section
describes (:func:`judges.build_judge`) and a :class:`sampling_eval.SampleEvaluator` with the
section's sampler settings.

Both ``launch/eval.py`` (:mod:`.cli`, section = the eval config) and the in-training hook
(:mod:`.hook`, section = ``config.sample_eval``) call :func:`build_evaluator`, so a judge or
sampler setting added to the section is read once, for both.
"""

from __future__ import annotations

import ml_collections
from jax.sharding import Mesh

from tokendrift_jax.eval import judges
from tokendrift_jax.eval import sampling_eval


def build_evaluator(section: ml_collections.ConfigDict, *, model_cfg, process, mesh: Mesh,
                    length: int, family=None, prefix: str = "config", progress: bool = True,
                    attention_impl: str | None = None, sampler_options: dict | None = None,
                    prompt_length: int = 0, batch: int | None = None,
                    judge: judges.Judge | None = None) -> sampling_eval.SampleEvaluator:
  """The judge of ``section`` and an evaluator sampling ``model_cfg`` under ``process``.

  The judge is built first (its checks — kind, weights on disk, tokenizer vs vocabulary —
  come before anything is compiled); ``evaluator.judge`` is it.

  Args:
    section: a config section with the judge fields (:func:`eval_config.judge_config`) and
      ``batch``, ``noise_removal``, ``sampler_precision``, ``model_dtype``.
    model_cfg: the backbone architecture.
    process: its diffusion process.
    mesh: the mesh of the sampler and the judge.
    length: sample length (of prompted samples: the completion's).
    family: the backbone's ``models.base.Family`` (the judge's tokenizer defaults).
    prefix: how ``section`` is named in error messages.
    progress: progress bars.
    attention_impl: passed to the backbone ("" / None = XLA's choice).
    sampler_options, prompt_length: see :class:`sampling_eval.SampleEvaluator`.
    batch: samples per sampler call (default ``section.batch``; the CLI caps it at the
      sample count).
    judge: an already built judge of ``section`` to share (a temperature sweep builds one
      evaluator per temperature and loads the judge once).
  """
  if judge is None:
    judge = judges.build_judge(section, process=process, max_length=length, mesh=mesh,
                               family=family, prefix=prefix, progress=progress)
  return sampling_eval.SampleEvaluator(
      model_cfg, process, judge, mesh=mesh,
      batch=int(section.batch) if batch is None else int(batch), length=length,
      noise_removal=str(section.noise_removal) or None,
      sampler_precision=str(section.sampler_precision) or None,
      model_dtype=str(section.model_dtype), attention_impl=attention_impl or None,
      progress=progress, prefix=prefix, sampler_options=sampler_options,
      prompt_length=prompt_length)
