"""Methods that learn to select or train with the pool: LL4AL, DAL, VAAL, WAAL, FixMatch-style
semi-supervised training, DFAL adversarial training, SRAAL; every method on every stack shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from dal_jax import experiment
from dal_jax import methods
from dal_jax import predict
from dal_jax import models
from dal_jax import training
from dal_jax.acquisition import _learned
from dal_jax.methods import fixmatch
from dal_jax.methods import ll4al
from dal_jax.acquisition import _sraal as sraal
from dal_jax.methods import waal
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
  net = ll4al.LossPredictionModule((3, 6), width=7, rngs=nnx.Rngs(0))
  got = net(feats)
  w = [(np.asarray(b.kernel.value, np.float64), np.asarray(b.bias.value, np.float64))
       for b in net.branches]
  pooled = [np.asarray(feats[0], np.float64).mean(axis=(1, 2)), np.asarray(feats[1], np.float64)]
  h = np.concatenate([np.maximum(p @ k + bias, 0) for p, (k, bias) in zip(pooled, w)], -1)
  ref = h @ np.asarray(net.out.kernel.value) + np.asarray(net.out.bias.value)
  np.testing.assert_allclose(got, ref[:, 0], rtol=1e-4, atol=1e-5)


def test_ll4al_term_trains_the_module_with_the_ranking_loss(splits):
  model = models.get_model("mlp", splits.pool.x.shape[1:], 10, hidden=(32, 16))
  term = ll4al.loss_prediction_term(width=8)
  x = jnp.asarray(splits.pool.x[:64])
  y = jnp.asarray(splits.pool.y[:64])
  variables = training.initialize(model, jax.random.key(0), x[:1], (term,))
  tx = training.make_optimizer(training.TrainConfig())
  step = training.make_train_step(model, tx, (term,))
  state = training.init_train_state(variables, tx)
  new, m = jax.jit(step)(state, (x, y), jax.random.key(1))
  assert "ll4al/ranking_loss" in m and np.isfinite(float(m["ll4al/ranking_loss"]))
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                       state.variables["terms"], new.variables["terms"])
  assert max(jax.tree.leaves(moved)) > 0  # the module is trained jointly
  out = predict.predict(model, new.variables["model"], x, outputs=("predicted_loss",),
                        terms=(term,), term_params=new.variables["terms"]).extras
  where = jnp.arange(64) % 2 == 0
  acquisition = methods.get_method("ll4al").acquisition
  scores, _ = acquisition.select({}, {"predicted_loss": out["predicted_loss"]},
                                 key=jax.random.key(0), k=3, where=where)
  assert np.asarray(where)[np.asarray(scores)].all()
  best = np.argsort(-np.where(np.asarray(where), np.asarray(out["predicted_loss"]), -np.inf))[:3]
  np.testing.assert_array_equal(np.sort(np.asarray(scores)), np.sort(best))
  with pytest.raises(ValueError, match="aux holds 'features'"):
    bare = models.Model(init=model.init,
                        apply=lambda v, x, **kw: (model.apply(v, x, **kw)[0], {}))
    training.initialize(bare, jax.random.key(0), x[:1], (term,))


# ---- FixMatch-style semi-supervised training ----


def test_translation_is_a_crop_of_the_edge_padded_image(rng):
  x = jnp.asarray(rng.normal(size=(5, 8, 8, 2)), jnp.float32)
  key = jax.random.key(3)
  got = fixmatch._translate(key, x, 2)
  shifts = np.asarray(jax.random.randint(key, (5, 2), 0, 5))
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  ref = np.stack([padded[i, s[0]:s[0] + 8, s[1]:s[1] + 8] for i, s in enumerate(shifts)])
  np.testing.assert_array_equal(got, ref)
  strong = fixmatch.strong_augment(key, jnp.full((3, 16, 16, 1), 5.0))
  # Cutout blanks an 8x8 square (noise is small), the rest stays near the input.
  np.testing.assert_array_equal(np.sum(np.asarray(strong) < 2.5, axis=(1, 2, 3)), [64] * 3)


def test_semi_supervised_step_thresholds_pseudo_labels(splits):
  model = models.get_model("mlp", splits.pool.x.shape[1:], 10, hidden=(32,))
  x = jnp.asarray(splits.pool.x[:32])
  y = jnp.asarray(splits.pool.y[:32])
  xu = jnp.asarray(splits.pool.x[32:96])
  tx = training.make_optimizer(training.TrainConfig())
  rates = {}
  for tau in (0.0, 1.0):
    term = fixmatch.loss_term(1.0, 2, tau)
    state = training.init_train_state(
        training.initialize(model, jax.random.key(0), x[:1], (term,)), tx)
    _, m = jax.jit(training.make_train_step(model, tx, (term,)))(state, (x, y, xu),
                                                                 jax.random.key(1))
    rates[tau] = (float(m["fixmatch/pseudo_label_rate"]), float(m["fixmatch/unlabeled_loss"]))
  assert rates[0.0][0] == 1.0 and rates[0.0][1] > 0
  assert rates[1.0][0] < 1.0
  with pytest.raises(ValueError, match="non-empty `unlabeled` mask"):
    training.fit(model, x, y, jnp.ones(32, bool), key=jax.random.key(0),
                 config=training.TrainConfig(max_steps=1), terms=(term,))
  with pytest.raises(ValueError, match="threshold in \\[0, 1\\]"):
    fixmatch.loss_term(1.0, 1, 1.5)
  with pytest.raises(ValueError, match="parameters of 0 loss terms but the step has 1"):
    bare = training.init_train_state(training.initialize(model, jax.random.key(0), x[:1]), tx)
    training.make_train_step(model, tx, (term,))(bare, (x, y, xu), jax.random.key(1))


def test_waal_training_critic_learns_the_labeled_unlabeled_gap(splits):
  model = models.get_model("mlp", splits.pool.x.shape[1:], 10, hidden=(32,))
  term = waal.alignment_term(alpha=1e-4, hidden=(16,))
  x = jnp.asarray(splits.pool.x[:32])
  y = jnp.asarray(splits.pool.y[:32])
  xu = jnp.asarray(splits.pool.x[32:64]) + 3.0  # unlabeled inputs from a shifted distribution
  tx = training.make_optimizer(training.TrainConfig(learning_rate=1e-2))
  state = training.init_train_state(training.initialize(model, jax.random.key(0), x[:1],
                                                        (term,)), tx)
  step = jax.jit(training.make_train_step(model, tx, (term,)))
  gaps = []
  for i in range(150):
    state, m = step(state, (x, y, xu), jax.random.key(i))
    gaps.append(float(m["waal/wasserstein"]))
  # The critic ascends E_U[c] - E_L[c] (in [-1, 1]) until it separates the two sets.
  assert gaps[0] < 0.5 and np.mean(gaps[-10:]) > 0.9
  with pytest.raises(ValueError, match="alpha > 0"):
    waal.alignment_term(alpha=0.0)


def test_sraal_indicator_matches_numpy(rng):
  from tests.conftest import random_log_probs
  lp = random_log_probs(rng, 3, 40, 5)
  p = np.exp(lp).mean(0)
  ref = 0.7 * np.mean((p - 0.2) ** 2, -1) / (4 / 25)
  np.testing.assert_allclose(sraal.uncertainty_indicator(jnp.asarray(lp), scale=0.7), ref,
                             rtol=1e-4, atol=1e-7)
  one_hot = jnp.log(jnp.array([[[1.0, 0, 0, 0, 0], [0.2, 0.2, 0.2, 0.2, 0.2]]]))
  np.testing.assert_allclose(sraal.uncertainty_indicator(one_hot), [1.0, 0.0], atol=1e-6)


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


@pytest.mark.parametrize("name", ["dal", "waal", "vaal", "ta_vaal", "sraal"])
def test_learned_acquisitions_pick_what_does_not_look_labeled(rng, name):
  h, where, far = _two_clusters(rng)
  # DAL with one sub-batch: one classifier ranks the whole batch (sub-batches are tested below).
  options = {"steps": 150, **({"sub_batches": 1} if name == "dal" else {})}
  a = methods.get_method(name, **options).acquisition
  state = a.init(jax.random.key(0), _spec(8))
  lp = jnp.log(jnp.full((2, h.shape[0], 10), 0.1))  # equal uncertainty everywhere (WAAL, SRAAL)
  outputs = {"pre_logits": h, "log_probs": lp, "x": h,
             "predicted_loss": jnp.asarray(rng.normal(size=h.shape[0]), jnp.float32)}
  k = 20
  idx, new_state = acq.checked_select(a, state, outputs, key=jax.random.key(1), k=k, where=where)
  idx = np.asarray(idx)
  assert len(far & set(idx.tolist())) >= 0.9 * k  # the unlabeled-only cluster is chosen first
  again, _ = a.select(state, outputs, key=jax.random.key(1), k=k, where=where)
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
  dal = methods.get_method("dal").acquisition
  state = dal.init(jax.random.key(0), _spec(8))
  with pytest.raises(ValueError, match=r"dal has no options \['beta_vae'\]"):
    methods.get_method("dal", beta_vae=1.0)
  with pytest.raises(ValueError, match="needs both"):
    w = methods.get_method("waal").acquisition
    w.select(w.init(jax.random.key(0), _spec(8)),
             {"pre_logits": h, "log_probs": jnp.full((1, 400, 3), -jnp.log(3.0))}, key=jax.random.key(0), k=3,
             where=jnp.ones(400, bool))
  with pytest.raises(ValueError, match="contain NaN"):
    dal.select(state, {"pre_logits": h.at[0, 0].set(jnp.nan)}, key=jax.random.key(0), k=3,
               where=where)
  with pytest.raises(ValueError, match="needs \\['pre_logits'\\]"):
    dal.select(state, {}, key=jax.random.key(0), k=3, where=where)


# ---- every method on every stack shape: a tiny end-to-end run, and resume gives the same ----

METHOD_CASES = {
    "ll4al": {"warm_start": True},
    "dal": {"methods.dal.steps": 10},
    "vaal": {"methods.vaal.steps": 10},
    "ta_vaal": {"methods.ta_vaal.steps": 10},
    "sraal": {"methods.sraal.steps": 10},
    "waal": {"methods.waal.steps": 10, "methods.waal.alpha": 0.1},
    "dfal": {"methods.dfal.adversarial_training": True, "methods.dfal.max_iter": 3},
    "dfal_ceal": {"acquisition": "dfal", "methods.dfal.adversarial_training": True,
                  "methods.dfal.max_iter": 3, "add_methods": "ceal", "methods.ceal.delta0": 0.5},
    "fixmatch": {"acquisition": "entropy", "add_methods": "fixmatch"},
    "mixup": {"acquisition": "margin", "add_methods": "mixup"},
    "ceal": {"acquisition": "entropy", "add_methods": "ceal", "methods.ceal.delta0": 0.5},
    "stabilizing": {"acquisition": "bald", "stabilizing_stop_set": 30},
}  # plain acquisitions on every stack shape: tests/test_loop.py (bald, coreset, random, ...)
SHAPES = {"single": {}, "ensemble3": {"ensemble_size": 3},
          "seeds2": {"num_seeds": 2, "parallel_seeds": True}}


def method_config(case, shape):
  cfg = tiny_config(acquisition=case, pool_subsample=60, budget=15, mc_samples=2)
  cfg.train.max_steps = 10
  for field, value in {**METHOD_CASES[case], **SHAPES[shape]}.items():
    node, *path = field.split(".")
    if path:
      target = cfg[node]
      for p in path[:-1]:
        target = target[p]
      target[path[-1]] = value
    else:
      cfg[field] = value
  return cfg


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("case", sorted(METHOD_CASES))
def test_every_method_on_every_stack_runs_and_resumes(tmp_path, splits, case, shape):
  cfg = method_config(case, shape)
  full = experiment.run_experiment(cfg, str(tmp_path / "a"), splits=splits)
  part = experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits, max_rounds=1)
  assert all(len(r) == 1 for r in part.values())
  resumed = experiment.run_experiment(cfg, str(tmp_path / "b"), splits=splits)
  for seed, records in full.items():
    assert [r["num_labels"] for r in records] == [10, 15]
    assert len(set(records[0]["selected"])) == 5
    assert [r["selected"] for r in resumed[seed]] == [r["selected"] for r in records]
    assert [r["accuracy"] for r in resumed[seed]] == pytest.approx(
        [r["accuracy"] for r in records], abs=1e-6)
  if case == "dfal":  # the adversarial copies carry the labels of the selected points
    run = experiment.build(cfg, splits)
    seed_run = experiment.SeedRun(run, cfg.seed, str(tmp_path / "b" / f"seed_{cfg.seed}"))
    seed_run.ckpt.close()
    copies = seed_run.state.methods["dfal_copies"]
    labeled = np.asarray(copies["y"])[np.asarray(copies["source"]) >= 0]
    np.testing.assert_array_equal(
        np.sort(labeled), np.sort(splits.pool.y[np.asarray(full[cfg.seed][0]["selected"])]))
