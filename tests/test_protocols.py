"""The published-protocol configs load, pass the config check, keep their protocol's numbers, and
run two rounds on digits-sized data through the comparison runner."""

import json

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
