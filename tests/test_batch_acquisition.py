"""Batch-aware methods against straightforward float64 NumPy references (full matrices are fine
here), plus their invariants and degenerate inputs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq
from dal_jax import models
from tests.conftest import random_log_probs


def f32(x):
  return jnp.asarray(x, jnp.float32)


# ------------------------------------------------------------------ BatchBALD

def ref_batchbald(lp, k):
  """Greedy BatchBALD with the joint entropy by full enumeration of label configurations."""
  p = np.exp(lp)
  _, n, c = p.shape
  cond = -np.sum(p * lp, -1).mean(0)

  def entropy(q):
    q = q[q > 0]
    return -np.sum(q * np.log(q))

  chosen, mis = [], []
  for _ in range(k):
    best, best_score = None, -np.inf
    for i in range(n):
      if i in chosen:
        continue
      idx = chosen + [i]
      joint = [np.mean(np.prod([p[:, j, cj] for j, cj in zip(idx, cfg)], axis=0))
               for cfg in itertools.product(range(c), repeat=len(idx))]
      score = entropy(np.array(joint)) - cond[idx].sum()
      if score > best_score:
        best, best_score = i, score
    chosen.append(best)
    mis.append(best_score)
  return chosen, mis


def test_batchbald_exact_matches_enumeration(rng):
  lp = random_log_probs(rng, 6, 14, 3, sharp=3.0)
  ref_idx, ref_mi = ref_batchbald(lp, 4)
  got = acq.batchbald(f32(lp), 4, key=jax.random.key(0), max_exact_configs=1000)
  np.testing.assert_array_equal(got.indices, ref_idx)
  np.testing.assert_allclose(got.joint_mi, ref_mi, rtol=1e-4, atol=1e-5)


def test_batchbald_sampled_agrees_with_exact(rng):
  lp = f32(random_log_probs(rng, 8, 20, 3, sharp=3.0))
  exact = acq.batchbald(lp, 5, key=jax.random.key(0), max_exact_configs=10**6)
  sampled = acq.batchbald(lp, 5, key=jax.random.key(1), max_exact_configs=3, num_samples=20000)
  np.testing.assert_allclose(sampled.joint_mi, exact.joint_mi, rtol=0.02, atol=0.01)


def test_batchbald_invariants(rng):
  lp = f32(random_log_probs(rng, 10, 60, 5, sharp=4.0))
  bald = np.asarray(acq.bald(lp))
  one = acq.batchbald(lp, 1, key=jax.random.key(0))
  assert int(one.indices[0]) == int(np.argmax(bald))
  np.testing.assert_allclose(one.joint_mi[0], bald.max(), rtol=1e-4)
  # Exact joint entropies: MI is non-decreasing and at most the sum of individual BALD scores.
  lp3 = f32(random_log_probs(rng, 10, 60, 3, sharp=4.0))
  bald3 = np.asarray(acq.bald(lp3))
  res = acq.batchbald(lp3, 6, key=jax.random.key(0), max_exact_configs=3**6)
  mi = np.asarray(res.joint_mi)
  assert np.all(np.diff(mi) >= -1e-5), "joint MI must not decrease"
  assert mi[-1] <= bald3[np.asarray(res.indices)].sum() + 1e-5
  # Sampled estimates: the same, up to Monte Carlo error (20,000 samples: a standard error of
  # ~0.01 nats per joint entropy, so 0.05 is ~5 standard errors of a difference; with 4,000
  # samples and 0.03 a fresh random input failed about once in twenty runs).
  res = acq.batchbald(lp, 12, key=jax.random.key(0), num_samples=20000)
  mi = np.asarray(res.joint_mi)
  assert np.all(np.diff(mi) >= -0.05)
  assert mi[-1] <= bald[np.asarray(res.indices)].sum() + 0.05


def test_batchbald_prefers_fresh_points_to_duplicates(rng):
  base = random_log_probs(rng, 64, 10, 3, sharp=4.0)
  lp = f32(np.concatenate([base, base], axis=1))  # every point twice
  idx = np.asarray(acq.batchbald(lp, 4, key=jax.random.key(0), max_exact_configs=3**4).indices)
  topk = np.asarray(acq.top_k(acq.bald(lp), 4))
  assert len(set(idx.tolist())) == 4
  # Top-k BALD takes both copies of its best points; BatchBALD's joint score sees the redundancy.
  assert len(set((topk % 10).tolist())) == 2
  assert len(set((idx % 10).tolist())) == 4


def test_batchbald_errors(rng):
  lp = f32(random_log_probs(rng, 4, 10, 3))
  with pytest.raises(ValueError, match="k=11"):
    acq.batchbald(lp, 11, key=jax.random.key(0))
  with pytest.raises(ValueError, match="NaN"):
    acq.batchbald(lp.at[0, 0, 0].set(jnp.nan), 2, key=jax.random.key(0))


# ------------------------------------------------------------------ BADGE

def explicit_gradient_embedding(lp, h):
  p = np.exp(lp).mean(0)
  a = p - np.eye(p.shape[1])[p.argmax(1)]
  return (a[:, :, None] * h[:, None, :]).reshape(len(h), -1)  # [N, C*D]


def ref_kmeanspp(key, g, k, candidates, first):
  """k-means++ with the full distance matrix and the same Gumbel noise as the JAX version."""
  n = len(g)
  d = ((g[:, None, :] - g[None, :, :]) ** 2).sum(-1)  # N x N, float64
  if first == "max_norm":
    j = int(np.argmax(np.where(candidates, (g * g).sum(1), -np.inf)))
  else:
    noise = np.asarray(jax.random.gumbel(jax.random.fold_in(key, 0), (n,)))
    j = int(np.argmax(np.where(candidates, noise, -np.inf)))
  chosen, available = [j], candidates.copy()
  available[j] = False
  for t in range(1, k):
    min_d = d[chosen].min(0)
    log_w = np.where(min_d > 0, np.log(np.maximum(min_d, 1e-300)), -1e30)
    noise = np.asarray(jax.random.gumbel(jax.random.fold_in(key, t), (n,)), np.float64)
    j = int(np.argmax(np.where(available, log_w + noise, -np.inf)))
    chosen.append(j)
    available[j] = False
  return chosen


@pytest.mark.parametrize("offset", [0.0, 400.0])
def test_factorised_distances_equal_explicit(rng, offset):
  # offset: features whose norm is ~400x their spread (float32 ||x||^2 + ||y||^2 - 2xy cancels).
  lp = random_log_probs(rng, 3, 30, 5)
  h = rng.normal(size=(30, 7)) + offset
  a, hh = acq.gradient_embedding_factors(f32(lp), f32(h))
  m = jnp.mean(hh, axis=0)
  g = explicit_gradient_embedding(lp, h)
  for j in (0, 13, 29):
    ref = ((g - g[j]) ** 2).sum(1)
    np.testing.assert_allclose(acq.factored_sq_distances(a, m, hh - m, j), ref,
                               rtol=1e-3, atol=1e-3 * ref.max() * 1e-3)


def test_distance_selections_match_float64_when_norms_dwarf_spread():
  """Embeddings with a common offset ~400x their spread: core-set, k-means++ and BADGE pick what
  float64 references pick (uncentred float32 distances did not, in 6 of 6 trials)."""
  for trial in range(6):
    r = np.random.default_rng(100 + trial)
    x = r.normal(size=(150, 8)) + 400.0 * r.normal(size=8)
    labeled = r.random(150) < 0.1
    got = acq.coreset(f32(x), 12, where=jnp.asarray(~labeled), key=jax.random.key(0))
    np.testing.assert_array_equal(got, ref_kcenter(x, 12, labeled))
    key = jax.random.key(trial)
    np.testing.assert_array_equal(acq.kmeans_pp(key, f32(x), 10),
                                  ref_kmeanspp(key, x, 10, np.ones(150, bool), "random"))
    lp = random_log_probs(r, 1, 150, 4)
    np.testing.assert_array_equal(
        acq.badge(f32(lp), f32(x), 10, key=key),
        ref_kmeanspp(key, explicit_gradient_embedding(lp, x), 10, np.ones(150, bool),
                     "max_norm"))


def test_badge_matches_full_matrix_reference(rng):
  lp = random_log_probs(rng, 1, 80, 4)
  h = np.abs(rng.normal(size=(80, 6)))
  where = rng.random(80) < 0.7
  key = jax.random.key(5)
  got = np.asarray(acq.badge(f32(lp), f32(h), 10, where=jnp.asarray(where), key=key))
  ref = ref_kmeanspp(key, explicit_gradient_embedding(lp, h), 10, where, "max_norm")
  np.testing.assert_array_equal(got, ref)
  # The same algorithm on explicit embeddings picks the same points.
  g = f32(explicit_gradient_embedding(lp, h))
  np.testing.assert_array_equal(
      acq.kmeans_pp(key, g, 10, where=jnp.asarray(where), first="max_norm"), got)


def test_kmeanspp_random_first_matches_reference(rng):
  x = rng.normal(size=(50, 3))
  key = jax.random.key(9)
  np.testing.assert_array_equal(acq.kmeans_pp(key, f32(x), 8),
                                ref_kmeanspp(key, x, 8, np.ones(50, bool), "random"))


def test_exact_gradient_embeddings_equal_the_outer_product():
  model = models.get_model("mlp", (3, 3, 1), 4, hidden=(5,))
  variables = model.init(jax.random.key(0), None)
  x = jax.random.normal(jax.random.key(1), (9, 3, 3, 1))
  emb = acq.gradient_embeddings(model, variables, x, chunk_size=4)
  logits, aux = model.apply(variables, x, train=False)
  lp = np.asarray(jax.nn.log_softmax(logits), np.float64)[None]
  h = np.asarray(aux["pre_logits"], np.float64)
  p = np.exp(lp[0])
  a = p - np.eye(4)[p.argmax(1)]
  kernel = (h[:, :, None] * a[:, None, :]).reshape(9, -1)  # dL/dW for W [D, C]
  # Parameter leaves are ordered bias, kernel.
  np.testing.assert_allclose(emb, np.concatenate([a, kernel], axis=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["badge", "coreset", "kmeans", "dmbal", "cluster_margin",
                                  "umr", "batchbald"])
def test_degenerate_inputs_give_distinct_indices_without_nan(name):
  n = 30
  lp = jnp.log(jnp.full((2, n, 3), 1 / 3))  # identical, maximally uncertain
  emb = jnp.zeros((n, 4))  # zero embeddings: all points identical
  where = jnp.arange(n) >= 5
  idx = np.asarray(acq.acquire(name, {"log_probs": lp, "pre_logits": emb},
                               key=jax.random.key(0), k=10, where=where))
  assert len(set(idx.tolist())) == 10 and np.asarray(where)[idx].all()


def test_embedding_errors(rng):
  lp = f32(random_log_probs(rng, 1, 10, 3))
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    acq.badge(lp, jnp.zeros(10), 2, key=jax.random.key(0))
  with pytest.raises(ValueError, match="NaN or inf"):
    acq.coreset(jnp.full((10, 2), jnp.nan), 2, key=jax.random.key(0))
  with pytest.raises(ValueError, match="only 3 unlabeled"):
    acq.coreset(jnp.ones((10, 2)), 4, where=jnp.arange(10) < 3, key=jax.random.key(0))
  with pytest.raises(ValueError, match="expected N=10"):
    acq.badge(lp, jnp.zeros((9, 2)), 2, key=jax.random.key(0))


# ------------------------------------------------------------------ core-set

def ref_kcenter(x, k, labeled, outliers=0):
  d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  min_d = d[labeled].min(0)
  available = ~labeled
  if outliers:
    far = np.argsort(-np.where(available, min_d, -np.inf), kind="stable")[:outliers]
    available[far] = False
  chosen = []
  for _ in range(k):
    j = int(np.argmax(np.where(available, min_d, -np.inf)))
    chosen.append(j)
    available[j] = False
    min_d = np.minimum(min_d, d[j])
  return chosen


@pytest.mark.parametrize("outliers", [0, 3])
def test_coreset_matches_full_matrix_reference(rng, outliers):
  x = rng.normal(size=(120, 5))
  labeled = rng.random(120) < 0.2
  got = acq.coreset(f32(x), 15, where=jnp.asarray(~labeled),
                    outliers=outliers, chunk_size=8, key=jax.random.key(0))
  np.testing.assert_array_equal(got, ref_kcenter(x, 15, labeled, outliers))


def test_coreset_with_nothing_labeled_and_permutation(rng):
  x = rng.normal(size=(40, 3))
  a = np.asarray(acq.coreset(f32(x), 6, key=jax.random.key(1)))
  b = np.asarray(acq.coreset(f32(x), 6, key=jax.random.key(1)))
  np.testing.assert_array_equal(a, b)
  assert len(set(a.tolist())) == 6
  labeled = np.zeros(40, bool)
  labeled[:4] = True
  perm = rng.permutation(40)
  base = np.asarray(acq.coreset(f32(x), 6, where=jnp.asarray(~labeled), key=jax.random.key(0)))
  permuted = np.asarray(acq.coreset(f32(x[perm]), 6,
                                    where=jnp.asarray(~labeled[perm]), key=jax.random.key(0)))
  np.testing.assert_array_equal(perm[permuted], base)


# ------------------------------------------------------------------ k-means family

def ref_lloyd(x, centers, w, iters):
  for _ in range(iters):
    assign = ((x[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
    new = centers.copy()
    for c in range(len(centers)):
      m = assign == c
      if w[m].sum() > 0:
        new[c] = (w[m, None] * x[m]).sum(0) / w[m].sum()
    centers = new
  return centers


def test_weighted_kmeans_matches_reference(rng):
  x = np.concatenate([rng.normal(size=(40, 2)) + off for off in ([0, 0], [6, 0], [0, 6])])
  w = rng.uniform(0.5, 2.0, size=120)
  key = jax.random.key(2)
  centers, assign = acq.kmeans(key, f32(x), 3, weights=f32(w), iters=30)
  init = x[np.asarray(acq.kmeans_pp(key, f32(x), 3))]
  np.testing.assert_allclose(centers, ref_lloyd(x, init, w, 30), rtol=1e-4, atol=1e-4)
  assert len(set(np.asarray(assign).tolist())) == 3


def test_dmbal_and_kmeans_select_properties(rng):
  lp = f32(random_log_probs(rng, 1, 200, 4))
  emb = f32(rng.normal(size=(200, 6)))
  where = jnp.asarray(rng.random(200) < 0.8)
  idx = np.asarray(acq.dmbal(lp, emb, 8, where=where, beta=5, key=jax.random.key(0)))
  info = np.asarray(1.0 + acq.margin(lp))
  prefilter = np.argsort(-np.where(np.asarray(where), info, -np.inf), kind="stable")[:40]
  assert set(idx.tolist()) <= set(prefilter.tolist())
  assert len(set(idx.tolist())) == 8


def test_cluster_margin_round_robin(rng):
  centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
  x = np.concatenate([rng.normal(size=(25, 2)) * 0.1 + c for c in centers])
  lp = f32(random_log_probs(rng, 1, 100, 3))
  idx = np.asarray(acq.cluster_margin(lp, f32(x), 4, num_clusters=4,
                                      margin_multiple=25, key=jax.random.key(0)))
  # All 100 points are in the low-margin set: one pick per cluster before any repeats.
  assert sorted((idx // 25).tolist()) == [0, 1, 2, 3]


def test_umr_matches_reference(rng):
  lp = random_log_probs(rng, 3, 60, 4)
  x = rng.normal(size=(60, 5))
  labeled = rng.random(60) < 0.1
  got = acq.uncertainty_minus_redundancy(f32(lp), f32(x), 7, where=jnp.asarray(~labeled),
                                         alpha=0.7)
  p = np.exp(lp).mean(0)
  u = -(p * np.log(p)).sum(1)
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  sim = xn @ xn.T
  max_sim = sim[labeled].max(0) if labeled.any() else np.full(60, -1.0)
  available, chosen = ~labeled, []
  for _ in range(7):
    j = int(np.argmax(np.where(available, u - 0.7 * max_sim, -np.inf)))
    chosen.append(j)
    available[j] = False
    max_sim = np.maximum(max_sim, sim[j])
  np.testing.assert_array_equal(got, chosen)


def test_kdpp_sampling_frequencies_match_determinants():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 4))
  lp = jnp.log(jnp.full((1, 4, 2), 0.5))
  counts = {}
  for s in range(600):
    pick = tuple(sorted(np.asarray(acq.kdpp(lp, f32(x), 2,
                                            quality="none", key=jax.random.key(s))).tolist()))
    counts[pick] = counts.get(pick, 0) + 1
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  l_mat = xn @ xn.T
  pairs = list(itertools.combinations(range(4), 2))
  dets = np.array([np.linalg.det(l_mat[np.ix_(p, p)]) for p in pairs])
  expected = dets / dets.sum()
  freq = np.array([counts.get(p, 0) for p in pairs]) / 600
  np.testing.assert_allclose(freq, expected, atol=0.06)


# ------------------------------------------------------------------ gradient length

def test_egl_and_entropy_gradnorm_match_the_closed_form(rng):
  n, d, c = 12, 5, 4
  h = rng.normal(size=(n, d))
  w = rng.normal(size=(d, c))
  b = rng.normal(size=c)
  z = h @ w + b
  lp = z - np.log(np.exp(z).sum(1, keepdims=True))
  p = np.exp(lp)

  # Float64 NumPy references from the closed form of a linear softmax head z = h W + b: the
  # gradient of a loss L(z) is (outer(h, dL/dz), dL/dz), so its norm is
  # sqrt((|h|^2 + 1) |dL/dz|^2); for -log p_y, dL/dz = p - e_y; for the entropy H(p),
  # dH/dz_k = -p_k (log p_k + H). (No jax_enable_x64 toggled at run time.)
  scale = np.sqrt((h ** 2).sum(1) + 1.0)  # [n]
  eye = np.eye(c)
  egl_ref = [sum(p[i, y] * scale[i] * np.linalg.norm(p[i] - eye[y]) for y in range(c))
             for i in range(n)]
  ent = -(p * lp).sum(1)
  egn_ref = [scale[i] * np.linalg.norm(-p[i] * (lp[i] + ent[i])) for i in range(n)]
  np.testing.assert_allclose(acq.expected_gradient_length(f32(lp[None]), f32(h)), egl_ref,
                             rtol=1e-4)
  np.testing.assert_allclose(acq.entropy_gradnorm(f32(lp[None]), f32(h)), egn_ref, rtol=1e-4,
                             atol=1e-6)


# ------------------------------------------------------------------ DFAL (DeepFool)

def test_deepfool_on_a_linear_model_gives_the_closed_form_distance(rng):
  from dal_jax.models import Model
  d, c = 6, 4
  w = jnp.asarray(rng.normal(size=(d, c)), jnp.float32)
  b = jnp.asarray(rng.normal(size=c), jnp.float32)

  def apply(variables, x, *, train, mc=False, key=None):
    h = x.reshape(x.shape[0], -1)
    return h @ variables["params"]["w"] + variables["params"]["b"], {"pre_logits": h}

  model = Model(init=lambda key, x: {"params": {"w": w, "b": b}}, apply=apply)
  variables = model.init(None, None)
  x = rng.normal(size=(40, d)).astype(np.float32)
  got = np.asarray(acq.deepfool_distance(model, variables, jnp.asarray(x), eps=1e-6,
                                         chunk_size=16))
  f = x.astype(np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
  k_hat = f.argmax(1)
  wn = np.asarray(w, np.float64)
  expected = []
  for i in range(40):
    dist = [abs(f[i, k] - f[i, k_hat[i]]) / np.linalg.norm(wn[:, k] - wn[:, k_hat[i]])
            for k in range(c) if k != k_hat[i]]
    expected.append(min(dist))
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
  scores = acq.dfal_scores(model, variables, jnp.asarray(x), where=jnp.arange(40) < 30)
  assert np.all(np.asarray(scores)[30:] == -np.inf)
  assert int(jnp.argmax(scores)) == int(np.argmin(np.asarray(expected)[:30]))
