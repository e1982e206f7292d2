"""The demo's per-seed comparison and verdict (pure logic on fabricated rows, no training)."""

from __future__ import annotations

import pytest

from tokendrift_jax.experiments import synthetic


def _rows(table: dict[int, list[float]], seeds=(1, 2, 3), entropy=None) -> list[dict]:
  """{nfe: [Gen-PPL per seed]} (and optionally {nfe: [entropy per seed]}) -> (NFE, seed)
  rows as the evaluator writes them."""
  return [dict(nfe=nfe, seed=s, gen_ppl=v, num_samples=8,
               entropy=3.0 if entropy is None else entropy[nfe][i])
          for nfe, values in table.items() for i, (s, v) in enumerate(zip(seeds, values))]


def test_pairs_by_seed_and_counts_wins():
  a = _rows({4: [10.0, 30.0, 5.0], 8: [1.0, 1.0, 1.0]})
  b = _rows({4: [20.0, 20.0, 6.0], 16: [1.0, 1.0, 1.0]})
  # A seed only one side has is left out of the pairs, not paired with another seed.
  b = [r for r in b if not (r["nfe"] == 4 and r["seed"] == 3)] + _rows({4: [6.0]}, seeds=(9,))
  (c,) = synthetic.paired_gen_ppl(a, b)     # only NFE 4 is in both
  assert c == dict(nfe=4, seeds=[1, 2], a=[10.0, 30.0], b=[20.0, 20.0], n=2, wins=1)


@pytest.mark.parametrize("drift, expected", [
    ({4: [1, 1, 1], 8: [1, 1, 1], 16: [1, 1, 1]},
     "Verdict: TokenDrift had lower Gen-PPL than continuation at every NFE (4, 8, 16) in "
     "every one of 3 seeds."),
    ({4: [1, 1, 1], 8: [1, 9, 1], 16: [9, 9, 1]},
     "Verdict: TokenDrift had lower Gen-PPL than continuation in every one of 3 seeds at "
     "NFE 4; mixed across seeds (NFE 8: lower in 2 of 3, NFE 16: lower in 1 of 3)."),
    ({4: [1, 1, 1], 8: [1, 1, 1], 16: [9, 9, 9]},
     "Verdict: TokenDrift had lower Gen-PPL than continuation in every one of 3 seeds at "
     "NFE 4 and 8; higher in every one of 3 seeds at NFE 16."),
    ({4: [9, 9, 9], 8: [9, 1, 9], 16: [9, 9, 9]},
     "Verdict: TokenDrift had higher Gen-PPL than continuation in every one of 3 seeds at "
     "NFE 4 and 16; mixed across seeds (NFE 8: lower in 1 of 3)."),
    ({4: [1, 9, 1], 8: [9, 1, 9], 16: [1, 1, 9]},
     "Verdict: TokenDrift against continuation was mixed across seeds (NFE 4: lower in 2 of "
     "3, NFE 8: lower in 1 of 3, NFE 16: lower in 2 of 3)."),
])
def test_verdict_claims_only_what_every_seed_shows(drift, expected):
  cont = _rows({4: [5, 5, 5], 8: [5, 5, 5], 16: [5, 5, 5]})
  pairs = synthetic.paired_gen_ppl(_rows(drift), cont)
  assert synthetic.verdict_line(pairs) == expected


def test_a_tie_is_not_a_win():
  pairs = synthetic.paired_gen_ppl(_rows({4: [5.0, 1.0]}, (1, 2)), _rows({4: [5.0, 5.0]}, (1, 2)))
  assert pairs[0]["wins"] == 1
  assert "mixed across seeds (NFE 4: lower in 1 of 2)" in synthetic.verdict_line(pairs)


def test_one_seed_says_it_is_one_draw():
  pairs = synthetic.paired_gen_ppl(_rows({4: [1.0]}, (0,)), _rows({4: [2.0]}, (0,)))
  line = synthetic.verdict_line(pairs)
  assert line.startswith("Verdict: TokenDrift had lower Gen-PPL than continuation at every "
                         "NFE (4) in the one seed.")
  assert "one draw" in line


def test_no_pairs_is_an_error():
  with pytest.raises(ValueError, match="no \\(NFE, seed\\) pair"):
    synthetic.verdict_line([])


def test_report_lists_every_seed_and_records_the_verdict():
  results = {"drift": _rows({4: [100.0, 300.0, 50.0], 8: [10.0, 10.0, 10.0]}),
             "continuation": _rows({4: [200.0, 200.0, 60.0], 8: [20.0, 20.0, 20.0]}),
             "pretrained": _rows({4: [150.0, 150.0, 150.0], 8: [5.0, 5.0, 5.0]})}
  text, record = synthetic.verdict_report(results)
  assert ("* NFE 4: 100.0 / 300.0 / 50.0 vs 200.0 / 200.0 / 60.0 vs 150.0 / 150.0 / 150.0; "
          "TokenDrift lower than continuation in 2 of 3 seeds, than the pretrained model in "
          "2 of 3") in text
  assert "than the pretrained model in 0 of 3" in text       # NFE 8
  assert text.rstrip().endswith(record["verdict"] + "\n" + record["entropy"])
  assert record["verdict"] == (
      "Verdict: TokenDrift had lower Gen-PPL than continuation in every one of 3 seeds at "
      "NFE 8; mixed across seeds (NFE 4: lower in 2 of 3).")
  assert [c["wins"] for c in record["vs_continuation"]] == [2, 3]


def test_entropy_line_counts_pairs_and_ratios_to_the_pretrained_model():
  # TokenDrift's entropy is below continuation's in 3 of 6 pairs (a tie is not lower); its
  # ratio to the pretrained model's ranges over 2.4/3.2 = 75 % ... 3.3/3.0 = 110 %.
  drift = _rows({4: [1, 1, 1], 8: [1, 1, 1]}, entropy={4: [2.4, 2.9, 3.1], 8: [2.8, 3.0, 3.3]})
  cont = _rows({4: [5, 5, 5], 8: [5, 5, 5]}, entropy={4: [3.0, 3.0, 3.0], 8: [3.0, 3.0, 3.2]})
  pre = _rows({4: [5, 5, 5], 8: [5, 5, 5]}, entropy={4: [3.2, 3.2, 3.2], 8: [3.0, 3.0, 3.0]})
  line = synthetic.entropy_line(synthetic.paired_gen_ppl(drift, cont, metric="entropy"),
                                synthetic.paired_gen_ppl(drift, pre, metric="entropy"))
  assert line.startswith("Entropy: TokenDrift's samples had lower entropy than "
                         "continuation's in 3 of 6 (NFE, seed) pairs, 75-110 % of the "
                         "pretrained model's; ")
  assert "matched entropy" in line
  with pytest.raises(ValueError, match="no \\(NFE, seed\\) pair"):
    synthetic.entropy_line([], [])
