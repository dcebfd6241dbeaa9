"""Reports: confidence intervals, round-to-round drops, paired tests and the penalty matrix of
Ash et al. 2020, against hand computations."""

import json

import numpy as np
import pytest

from dal_jax import analysis


def _runs(curves, start=10, step=10):
  """{seed: records} from ``[num_seeds, L]`` accuracies at labels start, start + step, ..."""
  return {s: [{"round": r, "num_labels": start + step * r, "accuracy": float(a)}
              for r, a in enumerate(row)] for s, row in enumerate(np.asarray(curves))}


def test_t_interval_by_hand():
  mean, half = analysis.mean_ci([1.0, 2.0, 3.0])
  # s = 1, t_{0.975, 2} = 4.302653 (table value), half = t · s / √3.
  assert mean == 2.0 and half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
  _, half5 = analysis.mean_ci([0.5, 0.7, 0.6, 0.4, 0.8])
  assert half5 == pytest.approx(2.776445 * np.std([0.5, 0.7, 0.6, 0.4, 0.8], ddof=1)
                                / np.sqrt(5), rel=1e-6)
  assert np.isnan(analysis.mean_ci([0.3])[1])
  m, h = analysis.mean_ci(np.array([[1.0, 5.0], [3.0, 5.0]]))
  np.testing.assert_allclose(m, [2.0, 5.0])
  np.testing.assert_allclose(h, [12.706205 * np.sqrt(2) / np.sqrt(2), 0.0], rtol=1e-6)


def test_max_drop_by_hand():
  np.testing.assert_allclose(analysis.max_drop(np.array([[0.5, 0.6, 0.4, 0.45, 0.3],
                                                         [0.1, 0.2, 0.3, 0.4, 0.5]])),
                             [0.2, 0.0])


def test_paired_beats_by_hand():
  a = np.array([[0.60, 0.70, 0.50], [0.62, 0.70, 0.52], [0.61, 0.72, 0.49]])
  b = np.array([[0.50, 0.71, 0.50], [0.52, 0.70, 0.50], [0.50, 0.70, 0.51]])
  # Column 0: d = 0.10, 0.10, 0.11 -> t = √3 · 0.10333 / 0.005774 = 31.0 > 4.303: a beats b.
  # Column 1: d = -0.01, 0, 0.02 -> t = 0.23 < 4.303. Column 2: d = 0, 0.02, -0.02 -> t = 0.
  np.testing.assert_array_equal(analysis.paired_beats(a, b), [True, False, False])
  np.testing.assert_array_equal(analysis.paired_beats(b, a), [False, False, False])
  same = np.full((3, 2), 0.5)
  np.testing.assert_array_equal(analysis.paired_beats(same + 0.1, same), [True, True])
  np.testing.assert_array_equal(analysis.paired_beats(same, same), [False, False])


def test_penalty_matrix_by_hand():
  # Setting 1: 3 seeds, labels 10 (shared initial set, ignored), 20, 30, 40, 50 -> L = 4.
  base = np.array([[0.3, 0.40, 0.50, 0.60, 0.70],
                   [0.3, 0.41, 0.52, 0.61, 0.69],
                   [0.3, 0.39, 0.51, 0.62, 0.71]])
  better = base + np.array([0, 0.10, 0.10, 0.0, 0.0])[None] + np.array(
      [[0, 0.01, 0.0, 0.01, -0.01], [0, 0.0, 0.01, -0.01, 0.01], [0, 0.02, 0.02, 0.0, 0.0]])
  s1 = {"random": _runs(base), "bald": _runs(better)}
  # Setting 2: L = 2; bald beats random at both sizes, entropy loses to both at one.
  r2 = np.array([[0.5, 0.6, 0.7], [0.5, 0.62, 0.71], [0.5, 0.61, 0.69]])
  b2 = r2 + np.array([[0, 0.05, 0.06], [0, 0.06, 0.05], [0, 0.05, 0.05]])
  e2 = r2 - np.array([[0, 0.1, 0.0], [0, 0.11, 0.01], [0, 0.12, -0.01]])
  s2 = {"random": _runs(r2), "bald": _runs(b2), "entropy": _runs(e2)}
  names, p = analysis.penalty_matrix({"one": s1, "two": s2})
  assert names == ["random", "bald", "entropy"]
  want = np.zeros((3, 3))
  want[1, 0] = 2 / 4 + 2 / 2  # bald beats random at 20, 30 of setting 1 and both of setting 2
  want[0, 2] = 1 / 2  # random beats entropy at 20 of setting 2
  want[1, 2] = 1 / 2 + (1 / 2 if analysis.paired_beats(b2[:, 2:], e2[:, 2:])[0] else 0)
  np.testing.assert_allclose(p, want)
  table = analysis.format_penalty_matrix(names, p, 2)
  assert "| **lost** |" in table and f"{want[1, 0]:.2f}" in table


def test_summary_rows_carry_intervals_and_drops():
  rows = analysis.summarize({"a": _runs([[0.5, 0.6, 0.55], [0.5, 0.7, 0.75]])}, target=0.6,
                            count_from=10)
  (r,) = rows
  assert r["final_accuracy_ci"] == pytest.approx(12.706205 * np.std([0.55, 0.75], ddof=1)
                                                 / np.sqrt(2), rel=1e-6)
  assert r["max_drop"] == pytest.approx([0.05, 0.0])
  assert r["labels_to_target"] == [20.0, 20.0] and r["labels_to_target_mean"] == 10.0
  assert r["labels_to_target_ci"] == 0.0
  assert "acquired labels to 60%" in analysis.format_table(rows)


def test_pairing_with_the_reference_by_hand():
  # labels 10, 20, 30, 40; reference (random) final mean = (0.6 + 0.8) / 2 = 0.7.
  ref = _runs([[0.3, 0.4, 0.5, 0.6], [0.3, 0.5, 0.7, 0.8]])
  strat = _runs([[0.5, 0.7, 0.7, 0.7], [0.4, 0.6, 0.8, 0.9], [0.1, 0.1, 0.1, 0.1]])
  p = analysis.paired_to_reference(strat, ref)
  assert p["seeds"] == 2  # seed 2 has no reference run
  # AUC (trapezoid / 30): seed 0 20/30 vs 13.5/30, seed 1 20.5/30 vs 17.5/30.
  d = np.array([6.5 / 30, 3.0 / 30])
  half = 12.706205 * np.std(d, ddof=1) / np.sqrt(2)
  np.testing.assert_allclose(p["auc_diff"], [d.mean(), half], rtol=1e-6)
  np.testing.assert_allclose(p["final_diff"], [0.1, 0.0], atol=1e-12)
  # 0.7 is first reached at 20 (seed 0) and 30 (seed 1) labels of random's 40.
  assert p["labels_to_reference_final"] == [20.0, 30.0] and p["reached"] == 2
  np.testing.assert_allclose(p["label_fraction"][0], (0.5 + 0.75) / 2)
  # Counted from an initial set of 10: (10/30 + 20/30) / 2.
  q = analysis.paired_to_reference(strat, ref, count_from=10)
  np.testing.assert_allclose(q["label_fraction"][0], 0.5)
  rows = analysis.summarize({"random": ref, "s": strat}, target=0.6)
  assert "paired" not in rows[0] and rows[1]["paired"]["reference"] == "random"
  table = analysis.format_paired(rows)
  assert "| s | 0.1583 ± " in table and "62 ± 159 % (2/2 seeds)" in table
  with pytest.raises(ValueError, match="different set sizes"):
    analysis.paired_to_reference(_runs([[0.5, 0.6]], step=20), ref)


def test_several_settings_from_one_command(tmp_path):
  from experiments import compare
  from tests.test_loop import tiny_config
  cfg = tiny_config(num_seeds=2, report_accuracy=0.3)
  report = compare.compare_settings(
      cfg, str(tmp_path), ["random", "margin"],
      ["n10k5:initial_size=10:query_size=5:budget=20", "n20k3:initial_size=20:query_size=3:"
       "budget=26"])
  for label, labels in (("n10k5", [10, 15, 20]), ("n20k3", [20, 23, 26])):
    runs = analysis.load_metrics(str(tmp_path / label / "margin"))
    assert sorted(runs) == [cfg.seed, cfg.seed + 1]
    assert [r["num_labels"] for r in runs[cfg.seed]] == labels
    assert (tmp_path / label / "comparison.png").exists()
  assert "## n10k5" in report and "## n20k3" in report and "over 2 setting(s)" in report
  assert (tmp_path / "settings.md").read_text() == report
  with pytest.raises(ValueError, match="bad override"):
    compare.compare_settings(cfg, str(tmp_path / "bad"), ["random"], ["x:nope=1"])


def test_ablate_runs_variants_and_pairs_by_seed(tmp_path):
  from experiments import ablate
  from tests.test_loop import tiny_config
  cfg = tiny_config(num_seeds=2)
  table = ablate.ablate(cfg, str(tmp_path), ["base", "short:train.max_steps=10",
                                             "mc2@margin:mc_samples=2"], ["random", "margin"])
  rows = json.loads((tmp_path / "ablation.json").read_text())["rows"]
  assert [(r["variant"], r["acquisition"]) for r in rows] == [
      ("base", "random"), ("base", "margin"), ("short", "random"), ("short", "margin"),
      ("mc2", "margin")]
  assert not (tmp_path / "mc2" / "random").exists()
  for variant, ref_variant in (("short", "short"), ("mc2", "base")):
    ref = analysis.load_metrics(str(tmp_path / ref_variant / "random"))
    runs = analysis.load_metrics(str(tmp_path / variant / "margin"))
    (lr, vr), (la, va) = analysis.curve(ref), analysis.curve(runs)
    d = analysis.area_under_curve(la, va) - analysis.area_under_curve(lr, vr)
    row = next(r for r in rows if r["variant"] == variant and r["acquisition"] == "margin")
    assert row["auc_minus_ref"][0] == pytest.approx(d.mean())
    assert row["auc_minus_ref"][1] == pytest.approx(12.706205 * d.std(ddof=1) / np.sqrt(2),
                                                    rel=1e-5)
  assert "| mc2 | margin |" in table
  with pytest.raises(ValueError, match="not in --acquisitions"):
    ablate.ablate(cfg, str(tmp_path / "bad"), ["x@bald"], ["random", "margin"])
