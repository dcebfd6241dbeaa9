"""Methods that learn to select or train with the pool: LL4AL, DAL, VAAL, WAAL, FixMatch-style
semi-supervised training, DFAL adversarial training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from dal_jax import experiment
from dal_jax import loop
from dal_jax import models
from dal_jax import training
from dal_jax.acquisition import _learned
from tests.test_loop import tiny_config


def _log_sigmoid(z):
  return -np.logaddexp(0.0, -z)


# ---- LL4AL ----


def test_margin_ranking_loss_matches_numpy(rng):
  for _ in range(3):
    b = 2 * int(rng.integers(1, 20))
    pred, target = rng.normal(size=b), rng.exponential(size=b)
    margin = float(rng.uniform(0.1, 2.0))
    half = b // 2
    sign = np.where(target[:half] > target[half:], 1.0, -1.0)
    ref = np.mean(np.maximum(0.0, -sign * (pred[:half] - pred[half:]) + margin))
    got = training.margin_ranking_loss(jnp.asarray(pred), jnp.asarray(target), margin=margin)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
  # Known answers: predictions ordered like the losses by more than the margin cost nothing;
  # reversed ones cost the gap plus the margin.
  t = jnp.array([3.0, 0.0])
  assert float(training.margin_ranking_loss(jnp.array([5.0, 1.0]), t)) == 0.0
  assert float(training.margin_ranking_loss(jnp.array([1.0, 5.0]), t)) == pytest.approx(5.0)
  # The true losses are constants: no gradient reaches them.
  g = jax.grad(lambda tt: training.margin_ranking_loss(jnp.array([1.0, 5.0]), tt))(t)
  np.testing.assert_array_equal(g, 0.0)
  with pytest.raises(ValueError, match="even length"):
    training.margin_ranking_loss(jnp.ones(3), jnp.ones(3))


def test_loss_prediction_module_pools_features_as_in_the_paper(rng):
  feats = (jnp.asarray(rng.normal(size=(4, 5, 5, 3)), jnp.float32),
           jnp.asarray(rng.normal(size=(4, 6)), jnp.float32))
  from flax import nnx
  net = models.LossPredictionModule((3, 6), width=7, rngs=nnx.Rngs(0))
  got = net(feats)
  w = [(np.asarray(b.kernel.value, np.float64), np.asarray(b.bias.value, np.float64))
       for b in net.branches]
  pooled = [np.asarray(feats[0], np.float64).mean(axis=(1, 2)), np.asarray(feats[1], np.float64)]
  h = np.concatenate([np.maximum(p @ k + bias, 0) for p, (k, bias) in zip(pooled, w)], -1)
  ref = h @ np.asarray(net.out.kernel.value) + np.asarray(net.out.bias.value)
  np.testing.assert_allclose(got, ref[:, 0], rtol=1e-4, atol=1e-5)


def test_ll4al_model_trains_the_module_with_the_ranking_loss(splits):
  base = models.get_model("mlp", splits.pool.x.shape[1:], 10, hidden=(32, 16))
  model = models.with_loss_prediction(base, width=8)
  x = jnp.asarray(splits.pool.x[:64])
  y = jnp.asarray(splits.pool.y[:64])
  variables = model.init(jax.random.key(0), x[:1])
  assert set(variables["params"]) == {"task", "loss_net"}
  tx = training.make_optimizer(training.TrainConfig())
  step = training.make_train_step(model, tx, loss_prediction_weight=1.0)
  state = training.init_train_state(variables, tx)
  new, m = jax.jit(step)(state, (x, y), jax.random.key(1))
  assert "ranking_loss" in m and np.isfinite(float(m["ranking_loss"]))
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                       state.variables["params"]["loss_net"], new.variables["params"]["loss_net"])
  assert max(jax.tree.leaves(moved)) > 0  # the module is trained jointly
  out = jax.jit(lambda v: model.apply(v, x, train=False))(new.variables)[1]["predicted_loss"]
  where = jnp.arange(64) % 2 == 0
  scores = acq.get_acquisition("ll4al").fn({"predicted_loss": out}, key=None, where=where)
  np.testing.assert_array_equal(np.isneginf(scores), ~np.asarray(where))
  np.testing.assert_allclose(scores[where], out[where])
  with pytest.raises(ValueError, match="aux holds 'features'"):
    bare = models.Model(init=base.init, apply=lambda v, x, **kw: (base.apply(v, x, **kw)[0], {}))
    models.with_loss_prediction(bare).init(jax.random.key(0), x[:1])


# ---- FixMatch-style semi-supervised training ----


def test_translation_is_a_crop_of_the_edge_padded_image(rng):
  x = jnp.asarray(rng.normal(size=(5, 8, 8, 2)), jnp.float32)
  key = jax.random.key(3)
  got = training._translate(key, x, 2)
  shifts = np.asarray(jax.random.randint(key, (5, 2), 0, 5))
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  ref = np.stack([padded[i, s[0]:s[0] + 8, s[1]:s[1] + 8] for i, s in enumerate(shifts)])
  np.testing.assert_array_equal(got, ref)
  strong = training.strong_augment(key, jnp.full((3, 16, 16, 1), 5.0))
  # Cutout blanks an 8x8 square (noise is small), the rest stays near the input.
  np.testing.assert_array_equal(np.sum(np.asarray(strong) < 2.5, axis=(1, 2, 3)), [64] * 3)


def test_semi_supervised_step_thresholds_pseudo_labels(splits):
  model = models.get_model("mlp", splits.pool.x.shape[1:], 10, hidden=(32,))
  x = jnp.asarray(splits.pool.x[:32])
  y = jnp.asarray(splits.pool.y[:32])
  xu = jnp.asarray(splits.pool.x[32:96])
  tx = training.make_optimizer(training.TrainConfig())
  state = training.init_train_state(model.init(jax.random.key(0), x[:1]), tx)
  rates = {}
  for tau in (0.0, 1.01):
    step = training.make_train_step(model, tx, unlabeled_weight=1.0, confidence_threshold=tau)
    _, m = jax.jit(step)(state, (x, y, xu), jax.random.key(1))
    rates[tau] = (float(m["pseudo_label_rate"]), float(m["unlabeled_loss"]))
  assert rates[0.0][0] == 1.0 and rates[0.0][1] > 0
  assert rates[1.01] == (0.0, 0.0)
  with pytest.raises(ValueError, match="non-empty `unlabeled` mask"):
    training.fit(model, x, y, jnp.ones(32, bool), key=jax.random.key(0),
                 config=training.TrainConfig(unlabeled_weight=1.0, max_steps=1))


def test_waal_training_critic_learns_the_labeled_unlabeled_gap(splits):
  base = models.get_model("mlp", splits.pool.x.shape[1:], 10, hidden=(32,))
  model = models.with_critic(base, hidden=(16,))
  x = jnp.asarray(splits.pool.x[:32])
  y = jnp.asarray(splits.pool.y[:32])
  xu = jnp.asarray(splits.pool.x[32:64]) + 3.0  # unlabeled inputs from a shifted distribution
  tx = training.make_optimizer(training.TrainConfig(learning_rate=1e-2))
  state = training.init_train_state(model.init(jax.random.key(0), x[:1]), tx)
  step = jax.jit(training.make_train_step(model, tx, waal_alpha=1e-4))
  gaps = []
  for i in range(150):
    state, m = step(state, (x, y, xu), jax.random.key(i))
    gaps.append(float(m["wasserstein"]))
  # The critic ascends E_U[c] - E_L[c] (in [-1, 1]) until it separates the two sets.
  assert gaps[0] < 0.5 and np.mean(gaps[-10:]) > 0.9
  with pytest.raises(ValueError, match="with_critic"):
    bare_step = training.make_train_step(base, tx, waal_alpha=1e-4)
    bare_state = training.init_train_state(base.init(jax.random.key(0), x[:1]), tx)
    bare_step(bare_state, (x, y, xu), jax.random.key(0))


# ---- DAL / VAAL / WAAL ----


def _two_clusters(rng, n=400, n_far=40, d=8):
  """Labeled points and most unlabeled ones around +2; ``n_far`` unlabeled ones around -2."""
  h = rng.normal(size=(n, d)) * 0.5 + 2.0
  far = rng.choice(np.arange(100, n), n_far, replace=False)
  h[far] -= 4.0
  where = np.ones(n, bool)
  where[:100] = False
  return jnp.asarray(h, jnp.float32), jnp.asarray(where), set(far.tolist())


def _spec(d, shape=(8,)):
  return acq.Spec(input_shape=shape, pre_logits_dim=d, num_classes=10)


@pytest.mark.parametrize("name", ["dal", "waal", "vaal", "ta_vaal"])
def test_learned_acquisitions_pick_what_does_not_look_labeled(rng, name):
  h, where, far = _two_clusters(rng)
  a = acq.get_acquisition(name)
  # DAL with one sub-batch: one classifier ranks the whole batch (sub-batches are tested below).
  options = {"steps": 150, **({"sub_batches": 1} if name == "dal" else {})}
  state = a.init_state(jax.random.key(0), _spec(8), **options)
  lp = jnp.log(jnp.full((2, h.shape[0], 10), 0.1))  # equal uncertainty everywhere (WAAL)
  inputs = {"pre_logits": h, "log_probs": lp, "x": h,
            "predicted_loss": jnp.asarray(rng.normal(size=h.shape[0]), jnp.float32)}
  k = 20
  idx, new_state = acq.acquire_with_state(a, inputs, key=jax.random.key(1), k=k, where=where,
                                          method_state=state, options=options)
  idx = np.asarray(idx)
  assert idx.shape == (k,) and len(set(idx.tolist())) == k and np.asarray(where)[idx].all()
  assert len(far & set(idx.tolist())) >= 0.9 * k  # the unlabeled-only cluster is chosen first
  again, _ = acq.acquire_with_state(a, inputs, key=jax.random.key(1), k=k, where=where,
                                    method_state=state, options=options)
  np.testing.assert_array_equal(idx, again)  # same key, same selection
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert any(bool(jnp.any(u != v)) for u, v in zip(jax.tree.leaves(state),
                                                    jax.tree.leaves(new_state)))


def test_dal_chooses_in_sub_batches_and_retrains_between_them(rng):
  h, where, _ = _two_clusters(rng)
  state = _learned.dal_init(jax.random.key(0), _spec(8))
  cfg = _learned.DALConfig(steps=20, sub_batches=3)
  idx, _ = _learned.dal(jax.random.key(1), h, 7, where=where, method_state=state, config=cfg)
  assert len(set(np.asarray(idx).tolist())) == 7 and np.asarray(where)[np.asarray(idx)].all()
  with pytest.raises(ValueError, match=r"k=500 must be in \[1, 300\]"):
    _learned.dal(jax.random.key(1), h, 500, where=where, method_state=state, config=cfg)


def test_normalized_rank(rng):
  v = rng.normal(size=9)
  np.testing.assert_allclose(_learned.normalized_rank(jnp.asarray(v))[:, 0],
                             np.argsort(np.argsort(v)) / 8)


def test_waal_uncertainty_matches_numpy(rng):
  from tests.conftest import random_log_probs
  lp = random_log_probs(rng, 3, 50, 6)
  p = np.exp(lp).mean(0)
  ref = 0.5 * (np.linalg.norm(np.log(p), axis=-1) + np.sum(-np.log(p), -1))
  np.testing.assert_allclose(_learned.waal_uncertainty(jnp.asarray(lp)), ref, rtol=1e-5)
  uniform = jnp.log(jnp.full((1, 1, 6), 1 / 6))
  assert float(_learned.waal_uncertainty(uniform)[0]) <= ref.min() + 1e-6  # minimal at uniform


def test_vaal_losses_match_numpy(rng):
  cfg = _learned.VAALConfig(hidden=(16,), latent_dim=3, disc_hidden=(8,))
  state = _learned.vaal_init(jax.random.key(0), _spec(0, (2, 3, 1)), cfg)
  (_, enc), (_, dec), (_, disc) = _learned._vaal_nets(6, cfg)
  x = jnp.asarray(rng.normal(size=(10, 6)), jnp.float32)
  is_l = jnp.arange(10) < 4
  key = jax.random.key(5)
  vae = {"encoder": state["encoder"], "decoder": state["decoder"]}
  v_loss, d_loss = _learned._vaal_losses(cfg, (enc, dec, disc), vae, state["discriminator"], x,
                                         is_l, key)
  mu, logvar = (np.asarray(a, np.float64) for a in jnp.split(enc(state["encoder"], x), 2, -1))
  z = mu + np.exp(0.5 * logvar) * np.asarray(jax.random.normal(key, mu.shape))
  recon = np.mean(np.sum((np.asarray(dec(state["decoder"], jnp.asarray(z, jnp.float32)))
                          - np.asarray(x)) ** 2, -1))
  kl = np.mean(-0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar), -1))
  logit = np.asarray(disc(state["discriminator"], jnp.asarray(mu, jnp.float32)))[:, 0]
  fool = -np.mean(_log_sigmoid(logit))
  t = np.asarray(is_l, np.float64)
  d_ref = -np.mean(t * _log_sigmoid(logit) + (1 - t) * _log_sigmoid(-logit))
  np.testing.assert_allclose(v_loss, recon + kl + fool, rtol=1e-4)
  np.testing.assert_allclose(d_loss, d_ref, rtol=1e-4)


def test_learned_acquisition_errors(rng):
  h, where, _ = _two_clusters(rng)
  state = acq.get_acquisition("dal").init_state(jax.random.key(0), _spec(8))
  with pytest.raises(ValueError, match="acquire_with_state"):
    acq.acquire("dal", {"pre_logits": h}, key=jax.random.key(0), k=3, where=where)
  with pytest.raises(ValueError, match="needs its method_state"):
    acq.acquire_with_state("dal", {"pre_logits": h}, key=jax.random.key(0), k=3, where=where)
  with pytest.raises(ValueError, match=r"unknown DALConfig options \['beta'\]"):
    acq.acquire_with_state("dal", {"pre_logits": h}, key=jax.random.key(0), k=3, where=where,
                           method_state=state, options={"beta": 1.0})
  with pytest.raises(ValueError, match="takes no options"):
    acq.acquire_with_state("bald", {"log_probs": jnp.zeros((1, 4, 2))}, key=jax.random.key(0),
                           k=1, options={"steps": 1})
  with pytest.raises(ValueError, match="needs both"):
    acq.acquire_with_state("waal", {"pre_logits": h, "log_probs": jnp.zeros((1, 400, 3))},
                           key=jax.random.key(0), k=3, where=jnp.ones(400, bool),
                           method_state=acq.get_acquisition("waal").init_state(
                               jax.random.key(0), _spec(8)))
  with pytest.raises(ValueError, match="contain NaN"):
    acq.acquire_with_state("dal", {"pre_logits": h.at[0, 0].set(jnp.nan)},
                           key=jax.random.key(0), k=3, where=where, method_state=state)


# ---- tiny end-to-end runs; resume restores the method's own state ----


@pytest.mark.parametrize("acquisition,overrides", [
    ("ll4al", {"warm_start": True}),
    ("dal", {}),
    ("vaal", {}),
    ("ta_vaal", {}),
    ("waal", {"train.waal_alpha": 0.1}),
    ("entropy", {"train.unlabeled_weight": 1.0}),
    ("dfal", {"adversarial_training": True}),
])
def test_end_to_end_and_resume(tmp_path, splits, acquisition, overrides):
  cfg = tiny_config(acquisition=acquisition, pool_subsample=100)
  for field, value in overrides.items():
    if field.startswith("train."):
      cfg.train[field[6:]] = value
    else:
      cfg[field] = value
  if acquisition in ("dal", "vaal", "ta_vaal", "waal"):
    cfg.acquisition_options.steps = 30
  full = experiment.run_experiment(cfg, str(tmp_path / "a"), splits=splits)[cfg.seed]
  assert [r["num_labels"] for r in full] == [10, 15, 20, 25]
  selected = [i for r in full for i in r["selected"]]
  assert len(set(selected)) == 15
  experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits, max_rounds=2)
  # The checkpoint holds the method's trained state, not the initial one.
  ctx = experiment._context(cfg, splits)
  run = experiment._SeedRun(cfg, splits, cfg.seed, str(tmp_path / "b" / f"seed_{cfg.seed}"), ctx)
  run.ckpt.close()
  fresh = loop.init_method_state(acquisition, jax.random.key(9), ctx.model, ctx.data.x_pool[:1],
                                 10, dict(ctx.rc.acquisition_options))
  if jax.tree.leaves(fresh):
    assert any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(run.state.method_state),
                                                     jax.tree.leaves(fresh)))
  if cfg.get("adversarial_training"):
    n_adv = int(jnp.sum(run.state.extra_y >= 0))
    assert n_adv == 10 and full[0]["num_adversarial"] == 5
    np.testing.assert_array_equal(
        np.sort(np.asarray(run.state.extra_y)[np.asarray(run.state.extra_y) >= 0]),
        np.sort(splits.pool.y[np.asarray(full[0]["selected"] + full[1]["selected"])]))
  resumed = experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits)[cfg.seed]
  assert [r["selected"] for r in resumed] == [r["selected"] for r in full]
  assert [r["accuracy"] for r in resumed] == pytest.approx([r["accuracy"] for r in full])


def test_sequential_only_options_are_rejected_with_parallel_seeds(tmp_path):
  for overrides in ({"acquisition": "ll4al"}, {"adversarial_training": True}):
    cfg = tiny_config(parallel_seeds=True, num_seeds=2, **overrides)
    with pytest.raises(ValueError, match="sequential loop"):
      experiment.check_config(cfg)
  cfg = tiny_config(acquisition="bald")
  cfg.acquisition_options.steps = 3
  with pytest.raises(ValueError, match="takes none"):
    experiment.check_config(cfg)
