"""BAIT, ACS-FW and ALFA-Mix in the loop: ensembles of 2 under 2 parallel seeds on a subsampled
pool (whose labeled block the loop pads by repeating a position), each round k distinct new
points; a resumed BAIT run selects what the full run selects. (One test: the three share the
compiled training and prediction programs.)"""

from dal_jax import experiment
from tests.test_loop import tiny_config


def test_run_with_ensembles_parallel_seeds_and_bait_resumes(tmp_path, splits):
  for acquisition in ("bait", "alfa_mix", "acs_fw"):
    cfg = tiny_config(acquisition=acquisition, ensemble_size=2, mc_samples=2, num_seeds=2,
                      parallel_seeds=True, pool_subsample=100, budget=20)
    full = experiment.run_experiment(cfg, str(tmp_path / acquisition), splits=splits)
    for records in full.values():
      assert [r["num_labels"] for r in records] == [10, 15, 20]
      chosen = [i for r in records for i in r["selected"]]
      assert len(chosen) == len(set(chosen)) == 10, acquisition
    assert full[cfg.seed][1]["selected"] != full[cfg.seed + 1][1]["selected"]
    if acquisition == "bait":
      experiment.run_experiment(cfg, str(tmp_path / "resumed"), splits=splits, max_rounds=1)
      resumed = experiment.run_experiment(cfg, str(tmp_path / "resumed"), splits=splits)
      for seed in full:
        assert [r["selected"] for r in resumed[seed]] == [r["selected"] for r in full[seed]]
