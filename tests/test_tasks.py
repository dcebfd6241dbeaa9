"""The task as a unit (``dal_jax.tasks``): its loss is the train step's first term, its criteria
stop training early, its metrics are reported, mixup wraps its loss, and a task registered from
user code runs through the experiment runner by name."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from dal_jax import models
from dal_jax import tasks
from dal_jax import training
from dal_jax.methods import mixup


def _brier(logits, labels):
  """A second task loss: the Brier score of each item (squared error of the probabilities)."""
  p = jax.nn.softmax(logits)
  return jnp.sum((p - jax.nn.one_hot(labels, logits.shape[-1])) ** 2, axis=-1)


BRIER = tasks.Task(name="test_brier", label_shape=lambda shape: (), loss=_brier,
                   criteria=(("accuracy", tasks.CLASSIFICATION.criterion("accuracy")),),
                   headline="accuracy", metrics=tasks.CLASSIFICATION.metrics,
                   doc="classification trained on the Brier score")
tasks.register_task(BRIER, overwrite=True)


def _step_setup(task, terms=()):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 4, 4, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 8), jnp.int32)
  model = models.get_model("mlp", (4, 4, 1), 3, hidden=(16,), dropout=0.0)
  variables = training.initialize(model, jax.random.key(0), x[:1], terms)
  tx = training.make_optimizer(training.TrainConfig())
  state = training.init_train_state(variables, tx)
  step = training.make_train_step(model, tx, tuple(terms), task)
  logits = np.asarray(model.apply(variables["model"], x, train=True, key=jax.random.key(1))[0],
                      np.float64)
  return step, state, x, y, logits


def test_the_train_step_minimises_the_task_loss():
  for task, reference in [
      (tasks.CLASSIFICATION, lambda lg, y: -log_softmax(lg, -1)[np.arange(len(y)), y]),
      (BRIER, lambda lg, y: ((np.exp(log_softmax(lg, -1)) - np.eye(3)[y]) ** 2).sum(-1))]:
    step, state, x, y, logits = _step_setup(task)
    _, m = step(state, (x, y), jax.random.key(1))
    want = reference(logits, np.asarray(y)).mean()
    assert float(m["loss"]) == pytest.approx(want, rel=1e-5)
    assert float(m["accuracy"]) == pytest.approx(np.mean(logits.argmax(-1) == np.asarray(y)))


def test_mixup_wraps_any_task_loss():
  term = mixup.loss_term(0.4)
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 6), jnp.int32)
  batch = training.Batch(x=jnp.zeros((6, 2)), y=y)
  mixed = term.prepare(batch, jax.random.key(2), teacher=None)
  lam, perm = float(mixed.extras["mixup_lam"]), np.asarray(mixed.extras["mixup_perm"])
  assert sorted(perm.tolist()) == list(range(6)) and 0 < lam < 1
  got = term.wrap(_brier, mixed)(logits, y)
  b = np.asarray(_brier(logits, y), np.float64)
  b_perm = np.asarray(_brier(logits, y[perm]), np.float64)
  np.testing.assert_allclose(got, lam * b + (1 - lam) * b_perm, rtol=1e-5)


def test_validation_criteria_are_the_tasks():
  lp = jnp.asarray(log_softmax(np.random.default_rng(3).normal(size=(20, 4)), -1), jnp.float32)
  y = jnp.asarray(np.arange(20) % 4)
  want_nll = -np.mean(np.asarray(lp, np.float64)[np.arange(20), np.asarray(y)])
  assert float(training.validation_score(lp, y, "nll")) == pytest.approx(-want_nll, rel=1e-6)
  with pytest.raises(ValueError, match=r"task 'test_brier' has no early-stopping criterion "
                     r"'nll'; valid: \['accuracy'\]"):
    training.validation_score(lp, y, "nll", BRIER)


def test_tasks_are_chosen_by_name_and_bad_names_are_one_line(tmp_path):
  from dal_jax import config as config_lib
  from dal_jax import experiment
  from tests.test_loop import tiny_config

  with pytest.raises(ValueError, match=r"unknown task 'masks'; valid: \[.*'classification'"):
    config_lib.check(tiny_config(task="masks"))
  bad = tiny_config(task="test_brier")
  bad.train.early_stopping = "nll"
  with pytest.raises(ValueError, match="has no early-stopping criterion 'nll'"):
    config_lib.check(bad)
  with pytest.raises(ValueError, match="already registered"):
    tasks.register_task(BRIER)
  # A task registered from user code runs by name and changes training (not selection code).
  runs = {}
  for name in ("classification", "test_brier"):
    workdir = tmp_path / name
    cfg = tiny_config(task=name, acquisition="entropy")
    cfg.train.early_stopping = "accuracy"
    experiment.run_experiment(cfg, str(workdir))
    with open(os.path.join(workdir, "seed_0", "metrics.jsonl")) as f:
      runs[name] = [json.loads(line) for line in f]
  assert [r["num_labels"] for r in runs["test_brier"]] == [10, 15, 20, 25]
  assert all(0 <= r["accuracy"] <= 1 for r in runs["test_brier"])
  assert [r["train_loss"] for r in runs["test_brier"]] != [
      r["train_loss"] for r in runs["classification"]]
