"""Workdir integrity as a user meets it: a lock, checkpoints that carry their config, metrics
that survive kills and torn lines, failed starts, Ctrl-C, one-line errors, --help."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dal_jax import experiment
from dal_jax import workdir as workdir_lib
from tests.test_loop import REPO
from tests.test_loop import tiny_config

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
TINY = ["--config.pool_size=300", "--config.test_size=200", "--config.val_size=100",
        "--config.initial_size=10", "--config.query_size=5", "--config.mc_samples=4",
        "--config.train.max_steps=20", "--config.train.eval_every=10"]


def _run(workdir, *extra, budget=40):
  return [sys.executable, "-m", "experiments.run", "--config=experiments/configs/digits.py",
          f"--workdir={workdir}", *TINY, f"--config.budget={budget}", *extra]


def _rounds(path):
  return [json.loads(line)["round"] for line in open(path).read().splitlines()]


def test_a_second_process_on_the_workdir_is_refused_naming_the_holder(tmp_path, splits):
  lock = workdir_lib.WorkdirLock(str(tmp_path))
  try:
    with pytest.raises(ValueError, match=rf"in use by another dal_jax process \(pid {os.getpid()}"):
      experiment.run_experiment(tiny_config(), str(tmp_path), splits=splits)
    proc = subprocess.run(_run(tmp_path), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        l for l in proc.stderr.strip().splitlines() if l.startswith("error: workdir")]
  finally:
    lock.release()
  experiment.run_experiment(tiny_config(), str(tmp_path), splits=splits, max_rounds=1)


@pytest.mark.parametrize("edit", ["delete", "rewrite"])
def test_config_json_cannot_let_another_config_continue(tmp_path, splits, edit):
  experiment.run_experiment(tiny_config(), str(tmp_path), splits=splits, max_rounds=1)
  path = tmp_path / "config.json"
  if edit == "delete":
    path.unlink()
  else:
    stored = json.loads(path.read_text())
    stored["query_size"] = 6
    path.write_text(json.dumps(stored))
  with pytest.raises(ValueError, match=r"another config \(query_size: 5 -> 6\)"):
    experiment.run_experiment(tiny_config(query_size=6), str(tmp_path), splits=splits)
  # The run's own config still resumes, whatever config.json says.
  records = experiment.run_experiment(tiny_config(), str(tmp_path), splits=splits)[0]
  assert [r["round"] for r in records] == [0, 1, 2, 3]


@pytest.mark.parametrize("damage", ["truncate", "torn", "delete", "stale_line"])
def test_metrics_are_rebuilt_from_the_checkpoints(tmp_path, splits, damage):
  cfg = tiny_config()
  full = experiment.run_experiment(cfg, str(tmp_path / "full"), splits=splits)[0]
  experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits, max_rounds=2)
  path = tmp_path / "b" / "seed_0" / "metrics.jsonl"
  lines = path.read_text().splitlines()
  if damage == "truncate":
    path.write_text(lines[0] + "\n")
  elif damage == "torn":
    path.write_text("\n".join(lines) + "\n" + lines[0][:40])
  elif damage == "delete":
    path.unlink()
  else:  # a record of a round the checkpoint does not hold (killed before its checkpoint)
    stale = json.loads(lines[-1])
    stale["round"] = 2
    path.write_text("\n".join(lines) + "\n" + json.dumps(stale) + "\n")
  resumed = experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits)[0]
  assert _rounds(path) == [0, 1, 2, 3]
  assert [r["selected"] for r in resumed] == [r["selected"] for r in full]
  on_disk = [json.loads(line) for line in path.read_text().splitlines()]
  assert [r["selected"] for r in on_disk] == [r["selected"] for r in full]


def test_a_failed_first_start_does_not_block_the_corrected_command(tmp_path, splits):
  with pytest.raises(ValueError, match="unknown dataset"):
    experiment.run_experiment(tiny_config(dataset="no_such_dataset_xyz"), str(tmp_path))
  records = experiment.run_experiment(tiny_config(query_size=6, budget=22), str(tmp_path),
                                      splits=splits)[0]
  assert [r["num_labels"] for r in records] == [10, 16, 22]


def test_out_of_range_fields_are_refused(tmp_path, splits):
  with pytest.raises(ValueError, match=r"config.checkpoints_to_keep=0 is not allowed: expected "
                                       r"an integer >= 1"):
    experiment.run_experiment(tiny_config(checkpoints_to_keep=0), str(tmp_path), splits=splits)
  with pytest.raises(ValueError, match=r"config.train.learning_rate=nan is not allowed"):
    cfg = tiny_config()
    cfg.train.learning_rate = float("nan")
    experiment.run_experiment(cfg, str(tmp_path), splits=splits)
  with pytest.raises(ValueError, match=r"model 'mlp' has no options \['hiddn'\]"):
    cfg = tiny_config()
    cfg.models.mlp = {"hiddn": (3,)}
    experiment.run_experiment(cfg, str(tmp_path), splits=splits)
  with pytest.raises(ValueError, match=r"dal has no options \['alpha'\]"):
    cfg = tiny_config(acquisition="dal")
    cfg.methods.dal = {"alpha": 1.0}
    experiment.run_experiment(cfg, str(tmp_path), splits=splits)
  assert not (tmp_path / "seed_0").exists()


def _interrupt_after_first_round(cmd, metrics):
  """Starts ``cmd``, sends Ctrl-C once ``metrics`` holds a round, and checks the exit: code 130,
  no traceback, the one-line resume message."""
  proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130 and "Traceback" not in err
  assert err.strip().endswith("interrupted — run the same command to resume")


def test_command_line_errors_help_resume_message_and_ctrl_c(tmp_path):
  bad = subprocess.run(_run(tmp_path / "x", "--config.query_size=0"), cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip() == ("error: config.query_size=0 is not allowed: expected an integer "
                                ">= 1")
  helped = subprocess.run([sys.executable, "-m", "experiments.run", "--help"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
  for text in ("query_size = 20", "train.max_steps = 1000", "train.min_steps = 300",
               "models.gal_cnn.<option>", "sraal:", "--import"):
    assert text in helped.stdout
  # Ctrl-C: a one-line message, no traceback; the same command resumes and says from where.
  metrics = tmp_path / "run" / "seed_0" / "metrics.jsonl"
  _interrupt_after_first_round(_run(tmp_path / "run", budget=60), metrics)
  again = subprocess.run(_run(tmp_path / "run", budget=60), cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "[random seed 0] resuming after round" in again.stdout or \
      "[bald seed 0] resuming after round" in again.stdout
  assert _rounds(metrics) == list(range(len(_rounds(metrics))))


def test_a_workdir_of_the_old_layout_is_refused_not_overwritten(tmp_path, splits):
  import numpy as np
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(str(tmp_path / "seed_0" / "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(3, args=ocp.args.StandardSave({"labeled": np.ones(4, bool)}))
  manager.wait_until_finished()
  manager.close()
  with pytest.raises(ValueError, match=r"written by an older dal_jax \(before schema 2\)"):
    experiment.run_experiment(tiny_config(), str(tmp_path), splits=splits)
  assert os.listdir(tmp_path / "seed_0" / "checkpoints") == ["3"]


def test_a_model_option_added_later_counts_at_its_default_when_resuming():
  from dal_jax import config as config_lib
  current = config_lib.resolved(config_lib.default_config())
  stored = json.loads(json.dumps(current))
  for added in ("conv_dropout", "fold_masks"):  # options GalCNN gained after such a run
    del stored["models"]["gal_cnn"][added]
  assert config_lib.differences(stored, current) == []
  stored["models"]["gal_cnn"]["filters"] = 16
  assert config_lib.differences(stored, current) == ["models.gal_cnn.filters: 16 -> 32"]
  changed = json.loads(json.dumps(current))
  changed["models"]["gal_cnn"]["conv_dropout"] = 0.5
  assert config_lib.differences(stored | {"models": current["models"]}, changed) == [
      "models.gal_cnn.conv_dropout: 0.0 -> 0.5"]


def test_fields_added_later_count_at_the_values_older_runs_ran_with():
  from dal_jax import config as config_lib
  legacy = config_lib.default_config()
  for k, v in config_lib.LEGACY_TRAIN.items():
    legacy.train[k] = v
  for k, v in config_lib.LEGACY_FIELDS.items():
    legacy[k] = v
  current = config_lib.resolved(legacy)
  stored = json.loads(json.dumps(current))
  for k in config_lib.LEGACY_TRAIN:
    del stored["train"][k]
  for k in config_lib.LEGACY_FIELDS:
    del stored[k]
  assert config_lib.differences(stored, current) == []
  newer = json.loads(json.dumps(current))
  newer["train"]["min_steps"] = 300
  assert config_lib.differences(stored, newer) == ["train.min_steps: 0 -> 300"]


def test_seeds_are_added_to_a_finished_workdir_and_reports_cover_the_named_seeds(tmp_path,
                                                                                   splits):
  from experiments import compare
  one = tiny_config(num_seeds=1, report_accuracy=0.3)
  compare.compare(one, str(tmp_path), ["random"])
  first = (tmp_path / "random" / "seed_0" / "metrics.jsonl").read_bytes()
  two = tiny_config(num_seeds=2, report_accuracy=0.3)
  _, results = compare.compare(two, str(tmp_path), ["random"], return_results=True)
  assert sorted(results["random"]) == [0, 1]
  assert (tmp_path / "random" / "seed_0" / "metrics.jsonl").read_bytes() == first  # kept
  # Seed 1 alone in another workdir makes exactly the same run.
  alone = tiny_config(seed=1, num_seeds=1, report_accuracy=0.3)
  _, other = compare.compare(alone, str(tmp_path / "alone"), ["random"], return_results=True)
  assert ([r["selected"] for r in other["random"][1]]
          == [r["selected"] for r in results["random"][1]])
  _, back = compare.compare(one, str(tmp_path), ["random"], plot_only=True, return_results=True)
  assert sorted(back["random"]) == [0]
  with pytest.raises(ValueError, match=r"holds none of the seeds \[7\]"):
    compare.compare(tiny_config(seed=7, num_seeds=1), str(tmp_path), ["random"], plot_only=True)


def test_run_concurrently_keeps_order_and_raises_the_first_error():
  import threading
  names = []

  def task(i):
    names.append(threading.current_thread().name)
    time.sleep(0.05 * (3 - i))
    return i * i

  assert experiment.run_concurrently([lambda i=i: task(i) for i in range(4)], 2) == [0, 1, 4, 9]
  assert {n.startswith("dal-worker") for n in names} == {True}

  def bad():
    raise ValueError("task failed")

  with pytest.raises(ValueError, match="task failed"):
    experiment.run_concurrently([lambda: 1, bad, lambda: 3], 2)
  assert experiment.run_concurrently([lambda: 5], 4) == [5]


def test_concurrent_workers_give_the_same_runs(tmp_path, splits):
  from experiments import compare
  strategies = ["random", "margin"]
  _, one = compare.compare(tiny_config(num_seeds=2, report_accuracy=0.3), str(tmp_path / "a"),
                           strategies, return_results=True)
  _, two = compare.compare(tiny_config(num_seeds=2, report_accuracy=0.3, workers=2),
                           str(tmp_path / "b"), strategies, return_results=True)
  seeds = experiment.run_experiment(tiny_config(acquisition="margin", num_seeds=2, workers=2),
                                    str(tmp_path / "c"), splits=splits)
  for s in (0, 1):
    for name in strategies:
      assert ([r["selected"] for r in one[name][s]] == [r["selected"] for r in two[name][s]])
      assert ([r["accuracy"] for r in one[name][s]] == [r["accuracy"] for r in two[name][s]])
    assert [r["selected"] for r in seeds[s]] == [r["selected"] for r in one["margin"][s]]


def test_ctrl_c_with_seeds_in_worker_threads_exits_cleanly_and_resumes(tmp_path):
  cmd = _run(tmp_path / "run", "--config.workers=2", "--config.num_seeds=2", budget=80)
  _interrupt_after_first_round(cmd, tmp_path / "run" / "seed_1" / "metrics.jsonl")
  again = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-2000:]
  for seed in (0, 1):
    rounds = _rounds(tmp_path / "run" / f"seed_{seed}" / "metrics.jsonl")
    assert rounds == list(range(len(rounds))) and len(rounds) == 15  # 10 + 14 x 5 = 80 labels
