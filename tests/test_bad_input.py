"""Bad or extreme input never passes silently: every case gets one clear error naming the
argument and what is allowed, or a result equal to a float64 / uniform reference."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from dal_jax import config as config_lib
from dal_jax import data
from dal_jax import experiment
from dal_jax import loop
from dal_jax import methods
from dal_jax import models
from dal_jax import training
from dal_jax.acquisition import _learned
from tests.conftest import random_log_probs
from tests.test_data import write_idx
from tests.test_loop import tiny_config


def f32(x):
  return jnp.asarray(x, jnp.float32)


# ------------------------------------------------------------------ selectors


@pytest.mark.parametrize("selector", ["power", "softmax", "softrank"])
@pytest.mark.parametrize("beta", [float("nan"), -1.0, float("inf")])
def test_bad_beta_is_refused_before_anything_runs(selector, beta):
  with pytest.raises(ValueError, match=f"beta of the {selector} selector must be a finite"):
    acq.get_acquisition("bald", selector=selector, beta=beta)
  with pytest.raises(ValueError, match="beta"):
    acq.get_selector(selector)(jax.random.key(0), jnp.arange(5.0), 2, beta=beta)
  cfg = config_lib.default_config()
  cfg.selector, cfg.beta = selector, beta
  with pytest.raises(ValueError, match="beta"):
    config_lib.check(cfg)


def test_power_with_beta_zero_draws_uniformly_zero_scores_included():
  scores = jnp.array([0.0, 0.5, 0.0, 2.0, -jnp.inf, 1.0])
  draws = jax.vmap(lambda k: acq.power_sample(k, scores, 1, beta=0.0))(
      jax.random.split(jax.random.key(0), 20000))
  counts = np.bincount(np.asarray(draws).ravel(), minlength=6)
  assert counts[4] == 0  # the masked point
  np.testing.assert_allclose(counts[[0, 1, 2, 3, 5]] / 20000, 0.2, atol=0.015)


def test_overflowing_softmax_weights_never_pick_masked_points():
  scores = jnp.array([-3.0, -jnp.inf, -2.0, -jnp.inf, -1.0])
  idx = acq.softmax_sample(jax.random.key(0), scores, 3, beta=1e38)  # beta*score -> -inf
  assert sorted(np.asarray(idx).tolist()) == [0, 2, 4]


@pytest.mark.parametrize("name", ["top_k", "power", "softmax", "softrank"])
def test_selectors_under_jit_with_captured_scores(name):
  scores = jnp.asarray(np.random.default_rng(0).random(30), jnp.float32)
  select = acq.get_selector(name)
  jitted = jax.jit(lambda key: select(key, scores, 4, beta=2.0))
  np.testing.assert_array_equal(jitted(jax.random.key(1)),
                                select(jax.random.key(1), scores, 4, beta=2.0))


def test_scores_with_nan_or_plus_inf_are_refused():
  with pytest.raises(ValueError, match="NaN"):
    acq.top_k(jnp.array([0.1, jnp.nan, 0.3]), 1)
  with pytest.raises(ValueError, match=r"\+inf"):
    acq.top_k(jnp.array([0.1, jnp.inf, 0.3]), 1)


@pytest.mark.parametrize("k", [np.int64(3), np.int32(3)])
def test_numpy_integer_k_is_accepted(rng, k):
  lp = f32(random_log_probs(rng, 4, 40, 3))
  emb = f32(rng.normal(size=(40, 5)))
  where = jnp.arange(40) >= 5
  for name in ["bald", "badge", "batchbald", "coreset", "kmeans", "dmbal", "umr", "kdpp"]:
    idx = np.asarray(acq.acquire(name, {"log_probs": lp, "pre_logits": emb},
                                 key=jax.random.key(0), k=k, where=where))
    assert idx.shape == (3,) and len(set(idx.tolist())) == 3 and np.asarray(where)[idx].all()
  np.testing.assert_array_equal(acq.top_k(jnp.arange(9.0), k), [8, 7, 6])


@pytest.mark.parametrize("k", [True, 3.0, 0, -2, "3"])
def test_bad_k_is_refused(k):
  with pytest.raises(ValueError, match=r"k must be an integer >= 1"):
    acq.top_k(jnp.arange(9.0), k)
  with pytest.raises(ValueError, match=r"k must be an integer >= 1"):
    acq.coreset(jnp.ones((9, 2)), k, key=jax.random.key(0))


# ------------------------------------------------------------------ log-probabilities


SCORE_FNS = ["entropy", "least_confidence", "margin", "variation_ratios", "mean_std", "bald",
             "vote_entropy", "consensus_kl", "batchbald", "badge"]


@pytest.mark.parametrize("name", SCORE_FNS)
def test_log_probs_must_be_normalised(rng, name):
  lp = random_log_probs(rng, 3, 12, 4)
  outputs = lambda v: {"log_probs": f32(v), "pre_logits": f32(np.ones((12, 3)))}  # noqa: E731
  run = lambda v: acq.acquire(name, outputs(v), key=jax.random.key(0), k=2)  # noqa: E731
  with_inf = lp.copy()
  with_inf[1, 5, 2] = np.inf
  with pytest.raises(ValueError, match=r"contains \+inf \(at sample 1, point 5, class 2\)"):
    run(with_inf)
  logits = rng.normal(size=(3, 12, 4)) * 3
  with pytest.raises(ValueError, match="normalised log-probabilities .*not logits or probab"):
    run(logits)
  with pytest.raises(ValueError, match="normalised log-probabilities"):
    run(np.exp(lp))  # probabilities
  confident = np.full((3, 12, 4), -np.inf)
  confident[..., 0] = 0.0  # log one-hot: -inf entries are fine
  idx = np.asarray(run(confident))
  assert len(set(idx.tolist())) == 2


def test_log_prob_checks_work_on_constants_captured_under_jit(rng):
  lp = f32(random_log_probs(rng, 2, 10, 3))
  np.testing.assert_allclose(jax.jit(lambda: acq.bald(lp))(), acq.bald(lp), atol=1e-6)
  bad = lp.at[0, 0, 0].set(jnp.inf)
  with pytest.raises(ValueError, match=r"\+inf"):
    jax.jit(lambda: acq.bald(bad))()


def test_mean_std_is_exact_for_identical_and_near_identical_samples(rng):
  lp = random_log_probs(rng, 1, 50, 6)
  same = np.repeat(lp, 8, axis=0)
  np.testing.assert_array_equal(acq.mean_std(f32(same)), 0.0)
  near = same + rng.normal(size=same.shape) * 1e-5
  near -= np.log(np.exp(near).sum(-1, keepdims=True))
  p = np.exp(near)
  ref = np.sqrt(((p - p.mean(0)) ** 2).mean(0)).mean(-1)  # float64 two-pass
  np.testing.assert_allclose(acq.mean_std(f32(near)), ref, rtol=0.05, atol=2e-7)


# ------------------------------------------------------------------ learned methods' options


@pytest.mark.parametrize("name,option,value,allowed", [
    ("dal", "learning_rate", float("nan"), "finite number > 0"),
    ("dal", "steps", -5, "integer >= 1"),
    ("dal", "sub_batches", 0, "integer >= 1"),
    ("dal", "batch_size", 1, "integer >= 2"),
    ("dal", "hidden", (64, 0), "positive integers"),
    ("vaal", "latent_dim", 0, "integer >= 1"),
    ("vaal", "kl_weight", -1.0, "finite number >= 0"),
    ("vaal", "steps", 2.5, "integer >= 1"),
    ("ta_vaal", "adversary_weight", float("inf"), "finite number >= 0"),
    ("ta_vaal", "loss_width", 0, "integer >= 1"),
    ("waal", "gradient_penalty", float("nan"), "finite number >= 0"),
    ("waal", "selection", -2.0, "finite number >= 0"),
    ("waal", "learning_rate", 0.0, "finite number > 0"),
    ("waal", "alpha", -0.5, "finite number >= 0"),
    ("sraal", "indicator_scale", float("nan"), "finite number >= 0"),
])
def test_learned_method_options_are_range_checked(name, option, value, allowed):
  with pytest.raises(ValueError, match=f"{name}: option {option} must be an? .*{allowed}"):
    methods.get_method(name, **{option: value})


def test_learned_leaf_checks_its_config(rng):
  h = f32(rng.normal(size=(30, 4)))
  state = _learned.dal_init(jax.random.key(0), acq.Spec((4,), 4, 3))
  with pytest.raises(ValueError, match="dal: option learning_rate"):
    _learned.dal(jax.random.key(0), h, 3, where=jnp.arange(30) > 5, method_state=state,
                 config=_learned.DALConfig(learning_rate=float("nan")))


# ------------------------------------------------------------------ training and round settings


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("max_steps", 0), ("eval_every", 0),
                                         ("patience", 0), ("learning_rate", float("nan")),
                                         ("weight_decay", -1.0)])
def test_train_config_is_checked_before_training(field, value):
  model = models.get_model("mlp", (4, 4, 1), 3, hidden=(8,))
  x = jnp.zeros((10, 4, 4, 1))
  cfg = training.TrainConfig(**{field: value})
  with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
    training.fit(model, x, jnp.zeros(10, jnp.int32), jnp.ones(10, bool), key=jax.random.key(0),
                 config=cfg)
  with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
    from dal_jax import learner as learner_lib
    learner_lib.Learner(model, cfg).fit(x, jnp.zeros(10, jnp.int32), jnp.ones(10, bool),
                                        keys=jax.random.split(jax.random.key(0), 1))
  run_cfg = tiny_config()
  run_cfg.train[field] = value
  with pytest.raises(ValueError, match=f"config.train.{field}"):
    config_lib.check(run_cfg)


@pytest.mark.parametrize("field,value,match", [
    ("pool_subsample", -5, "pool_subsample"), ("pool_subsample", 3, "at least .*query_size"),
    ("query_size", 0, "query_size"), ("mc_samples", -1, "mc_samples")])
def test_round_settings_are_checked(field, value, match):
  cfg = tiny_config(**{field: value})
  with pytest.raises(ValueError, match=match):
    config_lib.check(cfg)
  with pytest.raises(ValueError, match=f"RoundConfig.{field}"):
    loop.check_round_config(loop.RoundConfig(**{"query_size": 5, field: value}))


def test_a_budget_the_query_size_does_not_divide_ends_exactly_at_the_budget(tmp_path, splits):
  cfg = tiny_config(acquisition="entropy", initial_size=10, query_size=10, budget=35)
  records = experiment.run_experiment(cfg, str(tmp_path), splits=splits)[cfg.seed]
  assert [r["num_labels"] for r in records] == [10, 20, 30, 35]
  assert [len(r["selected"]) for r in records[:-1]] == [10, 10, 5]
  assert records[-1]["stop"] == "budget"


def test_add_labels_refuses_bad_indices_and_labels():
  state = loop.init_loop_state(jax.random.key(0), 6, np.array([0]), np.array([1]))
  with pytest.raises(ValueError, match=r"pool indices must be in \[0, 6\); got \[-1\]"):
    loop.add_labels(state, np.array([-1]), np.array([0]), num_classes=3)
  with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*\[99\]"):
    loop.add_labels(state, np.array([2]), np.array([99]), num_classes=3)
  with pytest.raises(ValueError, match="one length"):
    loop.add_labels(state, np.array([2, 3]), np.array([0]), num_classes=3)


# ------------------------------------------------------------------ IDX data


def _idx_dir(path, n_train, *, labels=None, n_test=10, classes=3, seed=0, test_labels=None):
  rng = np.random.default_rng(seed)
  path.mkdir(parents=True)
  y_train = np.arange(n_train) % classes if labels is None else labels
  y_test = np.arange(n_test) % classes if test_labels is None else test_labels
  for split, n, y in (("train", n_train, y_train), ("t10k", n_test, y_test)):
    write_idx(path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 4, 4)))
    write_idx(path / f"{split}-labels-idx1-ubyte", y)
  return path


def test_idx_cache_is_keyed_by_content_not_folder_name(tmp_path, capsys):
  a = _idx_dir(tmp_path / "A" / "data", 40, seed=1)
  b = _idx_dir(tmp_path / "B" / "data", 20, seed=2)
  data_dir = str(tmp_path / "tfds")
  train_a, _ = data.load_dataset(f"idx:{a}", data_dir=data_dir)
  train_b, _ = data.load_dataset(f"idx:{b}", data_dir=data_dir)
  assert len(train_a) == 40 and len(train_b) == 20
  assert "preparing" in capsys.readouterr().err
  data.load_dataset(f"idx:{b}", data_dir=data_dir)
  assert "preparing" not in capsys.readouterr().err  # prepared once
  # Rewriting every label of a prepared folder loads the new labels.
  write_idx(b / "train-labels-idx1-ubyte", (np.arange(20) + 1) % 3)
  train_b2, _ = data.load_dataset(f"idx:{b}", data_dir=data_dir)
  np.testing.assert_array_equal(train_b2.y, (np.arange(20) + 1) % 3)
  assert "preparing" in capsys.readouterr().err


@pytest.mark.parametrize("case,match", [
    ("empty", r"train-images-idx3-ubyte' holds 0 images"),
    ("one_class", r"train-labels-idx1-ubyte'.*needs >= 2 classes"),
    ("test_label", r"t10k-labels-idx1-ubyte': test label 7 \(row 2\) is outside"),
])
def test_bad_idx_data_fails_with_one_short_line(tmp_path, case, match):
  if case == "empty":
    d = _idx_dir(tmp_path / "d", 0, labels=np.zeros(0))
  elif case == "one_class":
    d = _idx_dir(tmp_path / "d", 12, labels=np.zeros(12))
  else:
    d = _idx_dir(tmp_path / "d", 12, test_labels=np.array([0, 1, 7, 2, 0, 1, 2, 0, 1, 2]))
  with pytest.raises(ValueError, match=match) as err:
    data.load_dataset(f"idx:{d}", data_dir=str(tmp_path / "tfds"))
  assert len(str(err.value)) < 300 and "\n" not in str(err.value)
  assert not os.path.exists(tmp_path / "tfds" / "dal_idx_images")  # nothing half-prepared


# ------------------------------------------------------------------ every acquisition


def _tiny_model():
  return models.get_model("mlp", (2, 2, 2), 3, hidden=(8,))


def _outputs(rng, n, case):
  if case == "uniform":  # all points equally (maximally) uncertain, identical embeddings
    lp = np.full((3, n, 3), -np.log(3.0))
    emb = np.zeros((n, 4))
  elif case == "confident":  # log one-hot rows (-inf entries), duplicated embeddings
    lp = np.full((3, n, 3), -np.inf)
    lp[..., 0] = 0.0
    emb = np.repeat(rng.normal(size=(1, 4)), n, axis=0)
  else:
    lp = random_log_probs(rng, 3, n, 3)
    emb = rng.normal(size=(n, 4))
  if case == "nan":
    lp[1, int(rng.integers(n)), 0] = np.nan
  model = _tiny_model()
  return {"log_probs": f32(lp), "pre_logits": f32(emb), "embeddings": f32(emb),
          "x": f32(rng.random((n, 2, 2, 2))),
          "predicted_loss": f32(rng.normal(size=n) if case != "uniform" else np.zeros(n)),
          "model": model, "variables": model.init(jax.random.key(0), None)}


def _linear_head_log_probs(rng, pre_logits, samples, classes):
  """``[S, N, C]`` log-probs of random linear heads around one head on ``pre_logits`` (what a
  dropout-head classifier gives; ALFA-Mix recovers that head from them and refuses others)."""
  h = np.asarray(pre_logits, np.float64)
  w = rng.normal(size=(h.shape[1], classes))
  logits = np.stack([h @ (w + 0.1 * rng.normal(size=w.shape)) for _ in range(samples)])
  return f32(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))


def _all_acquisitions():
  fast = {"steps": 5, "batch_size": 8}
  out = {}
  for name in methods.names():
    options = {k: v for k, v in fast.items() if k in methods.method_options(name)}
    if name in ("batchbald",):
      options = {"num_samples": 50}
    if name in ("kmeans", "dmbal", "cluster_margin"):
      options = {"iters": 3}
    method = methods.get_method(name, **options)
    if method.acquisition is not None:
      out[name] = method.acquisition
  return out


ACQUISITIONS = _all_acquisitions()


@pytest.mark.parametrize("name", sorted(ACQUISITIONS))
def test_every_acquisition_returns_k_distinct_candidates_or_a_clear_error(name):
  acquisition = ACQUISITIONS[name]
  rng = np.random.default_rng(abs(hash(name)) % 2**32)
  n, k = 40, 4
  spec = acq.Spec(input_shape=(2, 2, 2), pre_logits_dim=4, num_classes=3)
  for trial, case in enumerate(["random", "uniform", "confident", "nan", "random"]):
    outputs = _outputs(rng, n, case)
    entry = acq.ACQUISITIONS.get(name)  # (methods are not registry entries)
    if entry is not None and entry.tasks == ("detection",) and acquisition.needs.model:
      detector = models.get_model("centernet", (8, 8, 2), 3, width=2)  # reads a detector
      outputs.update(model=detector, variables=detector.init(jax.random.key(0), None),
                     x=f32(rng.random((n, 8, 8, 2))))
    if name == "ripu":  # scores pixels of images: each item a 2x2 image of these predictions
      outputs["log_probs"] = jnp.repeat(jnp.repeat(
          jnp.asarray(outputs["log_probs"])[:, :, None, None], 2, axis=2), 2, axis=3)
    if name == "alfa_mix" and case == "random":  # its input contract: a linear head's log-probs
      outputs["log_probs"] = _linear_head_log_probs(rng, outputs["pre_logits"], 3, 3)
    if trial == 4:  # all -inf but k: exactly k candidates left
      where = np.zeros(n, bool)
      where[rng.choice(n, k, replace=False)] = True
    else:
      where = rng.random(n) < rng.uniform(0.3, 0.9)
      where[rng.choice(n, k, replace=False)] = True
    key = jax.random.key(int(rng.integers(2**31)))
    state = acquisition.init(key, spec)
    try:
      idx, _ = acq.checked_select(acquisition, state, outputs, key=key, k=k,
                                  where=jnp.asarray(where))
    except ValueError as e:  # a clear one-line error; never for plain random inputs
      message = str(e)
      assert "\n" not in message and len(message) < 400, message
      assert case != "random", message
      assert case != "nan" or "NaN" in message, message
      continue
    idx = np.asarray(idx)
    assert idx.shape == (k,) and len(set(idx.tolist())) == k and where[idx].all(), (case, idx)
    if case == "nan":
      assert not acquisition.needs.log_probs, f"{name} accepted NaN log-probabilities"
