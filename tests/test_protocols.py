"""The published-protocol configs load, pass the config check, keep their protocol's numbers, and
run two rounds on digits-sized data through the comparison runner."""

import json

import numpy as np
import pytest

from dal_jax import analysis
from dal_jax import config as config_lib
from experiments import compare
from experiments.configs import gal2017_mnist
from experiments.configs import kirsch2019_mnist

PROTOCOLS = {
    "gal2017": (gal2017_mnist, dict(query_size=10, mc_samples=100, pool_subsample=2000,
                                    val_size=100, initial_size=20, budget=1000),
                "acquired"),
    "kirsch2019": (kirsch2019_mnist, dict(query_size=10, mc_samples=100, pool_subsample=10000,
                                          val_size=1024, initial_size=20), "labels"),
}


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_protocol_config_runs_two_rounds_on_digits(name, tmp_path):
  module, numbers, counting = PROTOCOLS[name]
  c = module.get_config()
  config_lib.check(c)
  assert {k: c[k] for k in numbers} == numbers and c.report_counting == counting
  assert c.initial_balanced and not c.warm_start and c.protocol
  # Digits-sized: the 8x8 digits, 2 rounds, few MC samples and steps.
  c.dataset, c.pool_size, c.test_size, c.val_size = "digits", 400, 200, 64
  c.budget = c.initial_size + 2 * c.query_size
  c.mc_samples, c.pool_subsample = 4, 100
  if c.model == "kirsch_cnn":  # 5x5 kernels need 14x14 images; 2x2 on 8x8 digits
    c.models.kirsch_cnn.kernel = 2
  c.train.max_steps, c.train.min_steps, c.train.min_epochs, c.train.eval_every = 20, 10, 1.0, 10
  c.num_seeds, c.progress, c.report_accuracy = 1, False, 0.2
  compare.compare(c, str(tmp_path), ["random", "bald"])
  for strategy in ("random", "bald"):
    records = analysis.load_metrics(str(tmp_path / strategy))[c.seed]
    assert [r["num_labels"] for r in records] == [20, 30, 40]
  rows = {r["strategy"]: r for r in json.loads((tmp_path / "comparison.json").read_text())}
  assert rows["bald"]["labels_counted_from"] == (20 if counting == "acquired" else 0)
  reach = rows["random"]["labels_to_target"][0]
  if reach is not None:
    want = reach - rows["random"]["labels_counted_from"]
    assert rows["random"]["labels_to_target_mean"] == want
  assert c.protocol.split(" (")[0] in compare.title(c)


def _write_runs(workdir, curves, start=20, step=10):
  """``workdir/seed_s/metrics.jsonl`` from ``[num_seeds, L]`` accuracies."""
  for s, row in enumerate(curves):
    d = workdir / f"seed_{s}"
    d.mkdir(parents=True)
    d.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"round": r, "num_labels": start + step * r, "accuracy": float(a)}) + "\n"
        for r, a in enumerate(row)))


@pytest.mark.parametrize("paper", ["gal2017", "kirsch2019"])
def test_protocol_review_statistics_against_hand_computation(paper, tmp_path):
  from experiments import protocol_review
  rng = np.random.default_rng()
  acc = rng.uniform(0.5, 0.85, size=(3, 6))
  acc[0, 2:] = 0.95                      # seed 0 reaches 0.9 at 40 labels
  acc[1, 4:] = 0.91                      # seed 1 at 60; seed 2 never
  _write_runs(tmp_path / "a" / "bald", acc)
  _write_runs(tmp_path / "a" / "random", acc[:1])
  r = protocol_review.review({"a": str(tmp_path / "a")}, paper, 0.9, 20)
  bald = r["recipes"]["a"]["strategies"]["bald"]
  offset = 20 if paper == "gal2017" else 0  # Gal et al. count acquired labels
  assert bald["labels"] == [20, 30, 40, 50, 60, 70] and bald["seeds"] == 3
  np.testing.assert_allclose(bald["accuracy_mean"], acc.mean(0), rtol=1e-12)
  np.testing.assert_allclose(bald["accuracy_median"], np.median(acc, 0), rtol=1e-12)
  half = 4.302653 * acc.std(0, ddof=1) / np.sqrt(3)  # t_{0.975, 2} from the table
  np.testing.assert_allclose(bald["accuracy_ci"], half, rtol=1e-6)
  assert bald["labels_to_target"] == [40 - offset, 60 - offset, None]
  assert bald["labels_to_target_median"] == 60 - offset  # the unreached seed counts as ∞
  one = r["recipes"]["a"]["strategies"]["random"]
  assert one["accuracy_ci"] is None and one["labels_to_target_median"] == 40 - offset
  assert protocol_review.median_reach([None, None, 50.0]) is None
  md = protocol_review.to_markdown(r)
  assert f"| a | bald | 3 |" in md and f"| {40 - offset}, {60 - offset}, — | {60 - offset} |" in md
  # The paper's numbers are labels to 90% whatever target the review reports.
  md75 = protocol_review.to_markdown(protocol_review.review({"a": str(tmp_path / "a")}, paper,
                                                            0.75, 20))
  assert "to 90% accuracy: " in md75.splitlines()[0] and "to 75%" in md75
