"""BAIT, ACS-FW and ALFA-Mix in the loop: ensembles of 2 under 2 parallel seeds on a subsampled
pool (whose labeled block the loop pads by repeating a position), each round k distinct new
points, and a resumed run selecting what a full run selects."""

import numpy as np
import pytest

from dal_jax import experiment
from tests.test_loop import tiny_config


@pytest.mark.parametrize("acquisition", ["bait", "acs_fw", "alfa_mix"])
def test_runs_with_ensembles_parallel_seeds_and_resumes(tmp_path, splits, acquisition):
  cfg = tiny_config(acquisition=acquisition, ensemble_size=2, mc_samples=2, num_seeds=2,
                    parallel_seeds=True, pool_subsample=100, budget=20)
  full = experiment.run_experiment(cfg, str(tmp_path / "full"), splits=splits)
  for seed, records in full.items():
    assert [r["num_labels"] for r in records] == [10, 15, 20]
    chosen = [i for r in records for i in r["selected"]]
    assert len(chosen) == len(set(chosen)) == 10
  experiment.run_experiment(cfg, str(tmp_path / "resumed"), splits=splits, max_rounds=1)
  resumed = experiment.run_experiment(cfg, str(tmp_path / "resumed"), splits=splits)
  for seed in full:
    assert [r["selected"] for r in resumed[seed]] == [r["selected"] for r in full[seed]]
  assert full[cfg.seed][1]["selected"] != full[cfg.seed + 1][1]["selected"]
