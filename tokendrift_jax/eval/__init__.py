"""Sample evaluation: Gen-PPL and entropy at fixed NFE (Tables 1-2, Fig. 2).

One concern per module:

* :mod:`.eval_config`: config sections and the checks of their values (:class:`EvalError`);
* :mod:`.judges`: the :class:`~.judges.Judge` interface (``score`` yields named metrics),
  the GPT-2 and synthetic judges,
  :func:`~.judges.build_judge`, :func:`~.judges.label`, :func:`~.judges.info`;
* :mod:`.genppl`: GPT-2 loading and the MDLM/DUO Gen-PPL protocol;
* :mod:`.entropy`: sample entropy of token-id frequencies;
* :mod:`.sampling_eval`: :class:`~.sampling_eval.SampleEvaluator` (sample, judge, one row
  per (NFE, seed));
* :mod:`.assemble`: :func:`~.assemble.build_evaluator`, the judge and evaluator of a config
  section (for the CLI and the hook alike);
* :mod:`.files`: atomic writes and JSON-lines reading;
* :mod:`.report`: summaries (mean ± SD), tables, the results.json payload, compare;
* :mod:`.plots`: Fig. 2 curve and the comparison figure;
* :mod:`.hook`: the in-training hook ``hook(step, params)``;
* :mod:`.cli`: ``launch/eval.py``;
* :mod:`.diffusion_lm`: a checkpoint as a scored LM (LLaDA's Monte-Carlo likelihood, the
  NELBO of MDLM/DUO, prompted generation), on token ids;
* :mod:`.lm_eval_adapter`: the lm-evaluation-harness model type ``tokendrift`` (imports
  ``lm_eval``); :mod:`.lm_eval_cli`: ``launch/lm_eval.py``.

Nothing here imports ``tokendrift_jax.train`` (start-up is in ``tokendrift_jax.runtime``).
"""
