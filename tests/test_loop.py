"""The loop: state invariants, oracle, stopping rules, end-to-end runs, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import analysis
from dal_jax import data
from dal_jax import experiment
from dal_jax import loop
from experiments import compare
from experiments.configs import digits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  c = digits.get_config()
  c.pool_size = 300
  c.test_size = 200
  c.val_size = 100
  c.initial_size = 10
  c.query_size = 5
  c.budget = 25
  c.mc_samples = 4
  c.train.max_steps = 20
  c.train.eval_every = 10
  c.progress = False
  for k, v in overrides.items():
    c[k] = v
  return c


def test_oracle_and_state_invariants():
  y = np.array([0, 1, 2, 1, data.OOD_LABEL, 0])
  oracle = loop.simulated_oracle(y, 3)
  state = loop.init_loop_state(jax.random.key(0), 6, np.array([0, 4]),
                               oracle.label(np.array([0, 4])))
  np.testing.assert_array_equal(state.labels, [0, -2, -2, -2, -1, -2])
  np.testing.assert_array_equal(state.trainable, [1, 0, 0, 0, 0, 0])
  state = state.replace(round=jnp.int32(3))
  state = loop.add_labels(state, np.array([2, 5]), oracle.label(np.array([2, 5])))
  np.testing.assert_array_equal(state.acquired_round, [0, -1, 4, -1, 0, 4])
  with pytest.raises(ValueError, match="distinct unlabeled"):
    loop.add_labels(state, np.array([2]), np.array([2]))
  with pytest.raises(ValueError, match=r"pool indices must be in \[0, 6\); got \[-1\]"):
    loop.add_labels(state, np.array([-1]), np.array([0]))
  with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*\[99\]"):
    loop.add_labels(state, np.array([1]), np.array([99]), num_classes=3)
  with pytest.raises(ValueError, match="one length"):
    loop.add_labels(state, np.array([1, 3]), np.array([0]))
  with pytest.raises(ValueError, match="out of range"):
    loop.simulated_oracle(np.array([0, 3]), 3)
  with pytest.raises(ValueError, match="invalid pool indices"):
    oracle.label(np.array([6]))


def test_scored_points_cover_a_subsample_and_every_labeled_point():
  labeled = np.zeros(1000, bool)
  labeled[np.random.default_rng(0).choice(1000, 300, replace=False)] = True
  pts = np.asarray(loop._scored_points(jax.random.key(0), jnp.asarray(labeled), 50, bucket=256))
  assert pts.shape == (50 + 512,)
  assert not labeled[pts[:50]].any() and len(set(pts[:50].tolist())) == 50
  assert labeled[pts[50:]].all() and set(pts[50:].tolist()) == set(np.nonzero(labeled)[0].tolist())


def test_balanced_initial_set():
  y = np.repeat(np.arange(4), 10)
  idx = loop.initial_indices(jax.random.key(1), y, 8, balanced=True, num_classes=4)
  np.testing.assert_array_equal(np.bincount(y[idx]), [2, 2, 2, 2])
  with pytest.raises(ValueError, match="divisible"):
    loop.initial_indices(jax.random.key(1), y, 7, balanced=True, num_classes=4)


@pytest.mark.parametrize("acquisition,subsample", [("random", 0), ("bald", 0), ("coreset", 100),
                                                   ("badge", 100), ("batchbald", 100),
                                                   ("dfal", 100)])
def test_end_to_end_tiny_run(tmp_path, splits, acquisition, subsample):
  cfg = tiny_config(acquisition=acquisition, pool_subsample=subsample)
  if acquisition == "dfal":
    cfg.model = "gal_cnn"  # DeepFool through convolutions
    cfg.models.gal_cnn.filters, cfg.models.gal_cnn.hidden = 4, 8
  results = experiment.run_experiment(cfg, str(tmp_path), splits=splits)
  records = results[cfg.seed]
  assert [r["num_labels"] for r in records] == [10, 15, 20, 25]
  assert records[-1]["stop"] == "budget" and all(r["stop"] is None for r in records[:-1])
  selected = [i for r in records for i in r["selected"]]
  assert len(selected) == len(set(selected)) == 15
  for r in records[:-1]:
    assert sum(r["selected_class_histogram"]) + r["selected_ood"] == 5
    assert 0 <= r["accuracy"] <= 1 and r["nll"] > 0 and 0 <= r["ece"] <= 1
    assert r["time_train"] > 0
  final = np.load(tmp_path / f"seed_{cfg.seed}" / "final_state.npz")
  assert final["labeled"].sum() == 25
  assert set(np.nonzero(final["acquired_round"] > 0)[0]) == set(selected)
  lines = (tmp_path / f"seed_{cfg.seed}" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["round"] for line in lines] == [0, 1, 2, 3]


def test_same_seed_same_selection_and_resume_in_process(tmp_path, splits):
  cfg = tiny_config(acquisition="entropy", selector="softmax", beta=4.0)
  full = experiment.run_experiment(cfg, str(tmp_path / "a"), splits=splits)[cfg.seed]
  again = experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits)[cfg.seed]
  assert [r["selected"] for r in full] == [r["selected"] for r in again]
  part = experiment.run_experiment(cfg, str(tmp_path / "c"), splits=splits, max_rounds=2)
  assert len(part[cfg.seed]) == 2
  resumed = experiment.run_experiment(cfg, str(tmp_path / "c"), splits=splits)[cfg.seed]
  assert [r["selected"] for r in resumed] == [r["selected"] for r in full]
  assert [r["accuracy"] for r in resumed] == pytest.approx([r["accuracy"] for r in full])


def test_warm_start_resume(tmp_path, splits):
  cfg = tiny_config(acquisition="margin", warm_start=True)
  full = experiment.run_experiment(cfg, str(tmp_path / "a"), splits=splits)[cfg.seed]
  experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits, max_rounds=2)
  resumed = experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits)[cfg.seed]
  assert [r["selected"] for r in resumed] == [r["selected"] for r in full]


def test_killed_run_resumes_to_the_same_labeled_set(tmp_path):
  """SIGKILL at a random moment (during training, scoring, checkpointing or the metrics write);
  the same command then finishes with the uninterrupted run's labeled set and records."""
  overrides = ["--config.pool_size=300", "--config.test_size=200", "--config.val_size=100",
               "--config.initial_size=10", "--config.query_size=5", "--config.budget=60",
               "--config.mc_samples=4", "--config.train.max_steps=20",
               "--config.train.eval_every=10"]

  def cmd(workdir):
    return [sys.executable, "-m", "experiments.run",
            "--config=experiments/configs/digits.py", f"--workdir={workdir}", *overrides]

  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  subprocess.run(cmd(tmp_path / "full"), cwd=REPO, env=env, check=True, capture_output=True)
  metrics = tmp_path / "killed" / "seed_0" / "metrics.jsonl"
  proc = subprocess.Popen(cmd(tmp_path / "killed"), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  rng = np.random.default_rng()
  after = int(rng.integers(1, 6))  # kill in a random round, at a random moment of it
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= after:
      break
    time.sleep(0.01)
  time.sleep(rng.uniform(0.0, 0.3))  # 11 rounds: well before the end
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  subprocess.run(cmd(tmp_path / "killed"), cwd=REPO, env=env, check=True, capture_output=True)
  a = np.load(tmp_path / "full" / "seed_0" / "final_state.npz")
  b = np.load(tmp_path / "killed" / "seed_0" / "final_state.npz")
  np.testing.assert_array_equal(a["labeled"], b["labeled"])
  np.testing.assert_array_equal(a["acquired_round"], b["acquired_round"])
  full = [json.loads(x) for x in (tmp_path / "full" / "seed_0" / "metrics.jsonl").read_text()
          .splitlines()]
  resumed = [json.loads(x) for x in metrics.read_text().splitlines()]
  assert [r["round"] for r in resumed] == list(range(11))
  assert [r["selected"] for r in resumed] == [r["selected"] for r in full]


def test_ensemble_and_debal_rounds(tmp_path, splits):
  cfg = tiny_config(acquisition="bald", ensemble_size=3, mc_samples=2, warm_start=True)
  full = experiment.run_experiment(cfg, str(tmp_path / "a"), splits=splits)[cfg.seed]
  assert [r["num_labels"] for r in full] == [10, 15, 20, 25]
  assert all(r["ensemble_size"] == 3 and r["num_devices"] == 1 for r in full)
  experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits, max_rounds=2)
  resumed = experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits)[cfg.seed]
  assert [r["selected"] for r in resumed] == [r["selected"] for r in full]


@pytest.mark.parametrize("acquisition,subsample,warm", [("bald", 0, False),
                                                        ("coreset", 100, True)])
def test_parallel_seeds_equal_sequential_seeds(tmp_path, splits, acquisition, subsample, warm):
  cfg = tiny_config(acquisition=acquisition, pool_subsample=subsample, warm_start=warm,
                    num_seeds=3, stabilizing_stop_set=30 if warm else 0)
  seq = experiment.run_experiment(cfg, str(tmp_path / "seq"), splits=splits)
  cfg.parallel_seeds = True
  experiment.run_experiment(cfg, str(tmp_path / "par"), splits=splits, max_rounds=1)
  par = experiment.run_experiment(cfg, str(tmp_path / "par"), splits=splits)
  for seed in seq:
    assert [r["selected"] for r in par[seed]] == [r["selected"] for r in seq[seed]]
    assert [r["accuracy"] for r in par[seed]] == pytest.approx(
        [r["accuracy"] for r in seq[seed]], abs=1e-3)
    assert [r.get("kappa") for r in par[seed]] == pytest.approx(
        [r.get("kappa") for r in seq[seed]], abs=1e-5)
  assert par[0][0]["parallel_seeds"] == 3


def test_target_accuracy_stops(tmp_path, splits):
  cfg = tiny_config(acquisition="random", target_accuracy=0.01)
  records = experiment.run_experiment(cfg, str(tmp_path), splits=splits)[cfg.seed]
  assert len(records) == 1 and records[0]["stop"] == "target_accuracy"


def test_config_errors(tmp_path, splits):
  with pytest.raises(ValueError, match="unknown method 'bladd'"):
    experiment.run_experiment(tiny_config(acquisition="bladd"), str(tmp_path / "x"))
  with pytest.raises(ValueError, match="unknown model 'vgg'"):
    experiment.run_experiment(tiny_config(model="vgg"), str(tmp_path / "y"))
  with pytest.raises(ValueError, match="unknown dataset"):
    experiment.run_experiment(tiny_config(dataset="no_such_dataset_xyz"), str(tmp_path / "z"))
  experiment.run_experiment(tiny_config(), str(tmp_path / "w"), splits=splits, max_rounds=1)
  with pytest.raises(ValueError, match=r"another config \(query_size: 5 -> 6\)"):
    experiment.run_experiment(tiny_config(query_size=6), str(tmp_path / "w"), splits=splits)


def test_k_larger_than_the_unlabeled_pool_stops_cleanly(tmp_path, splits):
  cfg = tiny_config(pool_size=30, initial_size=10, query_size=15, budget=100)
  records = experiment.run_experiment(cfg, str(tmp_path))[cfg.seed]
  assert [r["num_labels"] for r in records] == [10, 25]
  assert records[-1]["stop"] == "pool_exhausted"


def test_compare_writes_plot_and_table(tmp_path, splits):
  cfg = tiny_config(report_accuracy=0.3)
  table = compare.compare(cfg, str(tmp_path), ["random", "margin", "ens:margin:ensemble_size=2"])
  assert "| random |" in table and "| margin |" in table and "| ens |" in table
  assert json.loads((tmp_path / "ens" / "config.json").read_text())["ensemble_size"] == 2
  with pytest.raises(ValueError, match="bad override"):
    compare.parse_strategy("x:bald:no_such_field=1", cfg)
  with pytest.raises(ValueError, match=r"dal has no options \['nope'\]"):  # before any run
    bad = cfg.copy_and_resolve_references()
    bad.methods.dal.nope = 1
    compare.compare(bad, str(tmp_path / "bad"), ["entropy", "dal"])
  assert not (tmp_path / "bad" / "entropy").exists()
  assert (tmp_path / "comparison.png").stat().st_size > 1000
  rows = json.loads((tmp_path / "comparison.json").read_text())
  assert {r["strategy"] for r in rows} == {"random", "margin", "ens"}
  assert sum(rows[0]["acquired_class_histogram"]) == 15
  report = (tmp_path / "comparison.md").read_text()
  assert "## Diagnostics per round" in report and "**ens** (means over seeds)" in report
  margin = analysis.load_metrics(str(tmp_path / "margin"))[cfg.seed]
  assert all(r["pool_bald"] > 0 for r in margin if r["stop"] is None)  # S = 4 MC samples
  assert "pool_bald" not in analysis.load_metrics(str(tmp_path / "random"))[cfg.seed][0]
  # Diagnostics against a hand computation: means over seeds per round.
  fake = {"s": {0: [{"round": 0, "num_labels": 10, "accuracy": 0.5, "nll": 1.0, "ece": 0.2,
                     "pool_bald": 0.1, "selected_class_histogram": [3, 1, 0]}],
                1: [{"round": 0, "num_labels": 10, "accuracy": 0.7, "nll": 2.0, "ece": 0.4,
                     "selected_class_histogram": [2, 2, 0]}]}}
  (d,) = analysis.diagnostics(fake)["s"]
  assert d == pytest.approx({"round": 0, "num_labels": 10, "accuracy": 0.6, "nll": 1.5,
                             "ece": 0.3, "pool_bald": 0.1, "top_class_share": 0.625})
  # Table math against a hand computation.
  labels = np.array([10, 20, 30])
  acc = np.array([[0.2, 0.4, 0.6], [0.2, 0.5, 0.5]])
  np.testing.assert_allclose(analysis.area_under_curve(labels, acc), [0.4, 0.425])
  assert analysis.labels_to_reach(labels, acc, 0.45) == [30.0, 20.0]
  assert analysis.labels_to_reach(labels, acc, 0.9) == [None, None]


def test_no_test_or_validation_set_is_fine(tmp_path, splits):
  """The round needs neither: no test metrics are recorded, training runs max_steps."""
  cfg = tiny_config(test_size=0, val_size=0, acquisition="entropy", progress=True)
  records = experiment.run_experiment(cfg, str(tmp_path))[cfg.seed]
  assert [r["num_labels"] for r in records] == [10, 15, 20, 25]
  assert all("accuracy" not in r and r["train_steps"] == 20 for r in records)


def test_propose_and_incorporate_split_the_round_at_the_oracle(tmp_path, splits):
  """A human in the middle: propose gives the query, answers come later; the result equals the
  simulated round."""
  cfg = tiny_config(acquisition="margin")
  run = experiment.build(cfg, splits)
  seed_run = experiment.SeedRun(run, 0, str(tmp_path))
  seed_run.ckpt.close()
  seed_state = seed_run.state
  states, queries, _ = loop.propose([seed_state], method=run.method, learner=run.learner,
                                    data=run.data, config=run.round_config, num_classes=10)
  query = queries[0]
  assert query.stop is None and len(set(query.indices.tolist())) == 5
  assert not np.asarray(seed_state.labeled)[query.indices].any()
  with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
    loop.incorporate(states[0], query, np.full(5, 12), method=run.method, num_classes=10)
  answered = loop.incorporate(states[0], query, splits.pool.y[query.indices], method=run.method,
                              num_classes=10)
  simulated, _, _ = loop.al_round([seed_state], method=run.method, learner=run.learner,
                                  data=run.data, oracle=run.oracle, config=run.round_config)
  np.testing.assert_array_equal(answered.labeled, simulated[0].labeled)
  assert int(answered.round) == 1
  with pytest.raises(ValueError, match="belongs to round 0 but the state is at round 1"):
    loop.incorporate(answered, query, splits.pool.y[query.indices], method=run.method)


def test_a_query_carries_the_scores_the_acquisition_ranked_by(tmp_path, splits):
  """Query.scores are the acquisition's scores of the selected points (here: the predictive
  entropy of the deterministic model, recomputed in float64), in the order of selection."""
  cfg = tiny_config(acquisition="entropy", mc_samples=0, selector="top_k")
  run = experiment.build(cfg, splits)
  seed_run = experiment.SeedRun(run, 0, str(tmp_path))
  seed_run.ckpt.close()
  _, (query,), variables = loop.propose([seed_run.state], method=run.method, learner=run.learner,
                                        data=run.data, config=run.round_config, num_classes=10)
  lp = np.asarray(run.learner.predict(variables, run.data.x_pool[query.indices]).log_probs,
                  np.float64)[0, 0]
  want = -(np.exp(lp) * lp).sum(-1)
  np.testing.assert_allclose(query.scores, want, rtol=1e-4, atol=1e-5)
  assert (np.diff(query.scores) <= 1e-6).all()  # top-k: highest first
  # A batch method ranks by no single score.
  run = experiment.build(tiny_config(acquisition="coreset"), splits)
  seed_run = experiment.SeedRun(run, 0, str(tmp_path / "coreset"))
  seed_run.ckpt.close()
  _, (query,), _ = loop.propose([seed_run.state], method=run.method, learner=run.learner,
                                data=run.data, config=run.round_config, num_classes=10)
  assert query.scores is None and len(query.indices) == 5
