"""TypiClust's typicality and selection and ProbCover's greedy cover against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import acquisition as acq_lib
from dal_jax import analysis
from dal_jax import config as config_lib
from dal_jax import experiment
from dal_jax import loop
from dal_jax import selfsup
from dal_jax.acquisition import _typical
from experiments import compare


def _typicality_np(x, assign, knn):
  x = np.asarray(x, np.float64)
  out = np.zeros(len(x))
  for i in range(len(x)):
    same = np.nonzero((assign == assign[i]) & (np.arange(len(x)) != i))[0]
    if assign[i] < 0 or same.size == 0:
      continue
    d = np.sort(np.linalg.norm(x[same] - x[i], axis=1))[:knn]
    out[i] = 1.0 / d.mean()
  return out


def test_typicality_matches_numpy(rng):
  x = rng.normal(size=(90, 5)) + 10.0  # an offset: distances must not cancel
  assign = rng.integers(0, 6, 90)
  assign[7] = 9  # a singleton cluster: typicality 0
  assign[3] = -1  # not clustered
  got = _typical.typicality(jnp.asarray(x, jnp.float32), assign, knn=4, chunk_size=32)
  np.testing.assert_allclose(np.asarray(got), _typicality_np(x, assign, 4), rtol=2e-4)
  assert got[7] == 0 and got[3] == 0


def _typiclust_np(typ, assign, candidates, k, min_size):
  """Reference: a direct transcription of Algorithm 1 with explicit loops."""
  chosen, avail = [], candidates.copy()
  labeled_in = {c: int(np.sum((assign == c) & ~candidates)) for c in set(assign.tolist())}
  sizes = {c: int(np.sum(assign == c)) for c in labeled_in}
  for _ in range(k):
    open_clusters = [c for c in sorted(labeled_in) if np.any(avail & (assign == c))]
    big = [c for c in open_clusters if sizes[c] >= min_size] or open_clusters
    best = min(big, key=lambda c: (labeled_in[c], -sizes[c], c))
    members = [i for i in range(len(typ)) if avail[i] and assign[i] == best]
    j = max(members, key=lambda i: (typ[i], -i))
    chosen.append(j)
    avail[j] = False
    labeled_in[best] += 1
  return chosen


def test_typiclust_selection_matches_reference(rng):
  for trial in range(5):
    n = 60
    assign = rng.integers(0, 7, n)
    typ = rng.random(n)
    candidates = rng.random(n) > 0.2
    got = _typical.typiclust_from_clusters(typ, assign, candidates, 9, min_cluster_size=8)
    assert got.tolist() == _typiclust_np(typ, assign, candidates, 9, 8), trial


def test_typiclust_picks_the_centre_of_each_uncovered_blob():
  # Three tight blobs of different sizes, one already labeled: the two others' centres first.
  rng = np.random.default_rng(3)
  centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
  sizes = [40, 30, 20]
  x, blob = [], []
  for c, (m, s) in enumerate(zip(centres, sizes)):
    x += [m[None]] + [m + rng.normal(size=(s - 1, 2))]
    blob += [c] * s
  x = np.concatenate(x).astype(np.float32)
  blob = np.array(blob)
  where = np.ones(len(x), bool)
  where[0] = False  # the centre of blob 0 is labeled
  picks = acq_lib.get_acquisition("typiclust", knn=10).select(
      {}, {"embeddings": x}, key=jax.random.key(0), k=2, where=jnp.asarray(where))[0]
  picks = np.asarray(picks)
  assert sorted(blob[picks].tolist()) == [1, 2]
  typ = _typicality_np(x, blob, 10)
  for p in picks:  # the most typical point of its blob
    members = np.nonzero(blob == blob[p])[0]
    assert typ[p] == pytest.approx(typ[members].max(), rel=1e-3)


def _probcover_np(x, candidates, radius, k):
  x = np.asarray(x, np.float64)
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  ball = d <= radius
  covered = np.zeros(len(x), bool)
  for i in np.nonzero(~candidates)[0]:
    covered |= ball[i]
  avail, chosen = candidates.copy(), []
  for _ in range(k):
    gains = [int(np.sum(ball[i] & ~covered)) if avail[i] else -1 for i in range(len(x))]
    j = int(np.argmax(gains))
    if gains[j] <= 0:
      j = int(np.nonzero(avail)[0][0])
    chosen.append(j)
    avail[j] = False
    covered |= ball[j]
  return chosen


def test_probcover_greedy_matches_numpy(rng):
  for trial in range(4):
    x = (rng.normal(size=(80, 3)) + 5.0).astype(np.float32)
    candidates = rng.random(80) > 0.15
    radius = float(rng.uniform(0.6, 1.4))
    adj = np.asarray(_typical.ball_adjacency(_typical._diversity._centred(jnp.asarray(x)),
                                             radius, chunk_size=32))
    got = _typical.probcover_from_adjacency(adj, candidates, 12)
    assert got.tolist() == _probcover_np(x, candidates, radius, 12), trial
    via_registry = acq_lib.get_acquisition("probcover", radius=radius).select(
        {}, {"embeddings": x}, key=jax.random.key(trial), k=12, where=jnp.asarray(candidates))[0]
    ref = _probcover_np(x, candidates, radius, 12)
    # Past full coverage the registry draws at random; up to there it is the greedy order.
    d = np.linalg.norm(x[:, None] - x[None], axis=-1) <= radius
    covered = d[~candidates].any(0)
    full = next((i for i, j in enumerate(ref) if (covered | d[ref[:i + 1]].any(0)).all()), 11)
    assert np.asarray(via_registry)[:full + 1].tolist() == ref[:full + 1]


def test_purity_radius_keeps_alpha_of_the_balls_pure(rng):
  x = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 3.0])
  assign = np.repeat([0, 1], 100)
  r = _typical.purity_radius(jnp.asarray(x, jnp.float32), jnp.asarray(assign), alpha=0.9,
                             samples=200, key=jax.random.key(0))
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  pure = [(assign[d[i] <= r] == assign[i]).all() for i in range(200)]
  assert np.mean(pure) >= 0.9
  pure_wider = [(assign[d[i] <= r * 1.5] == assign[i]).all() for i in range(200)]
  assert np.mean(pure_wider) < np.mean(pure) or np.mean(pure) == 1.0


# ---- the cold start: the first labeled set chosen before any label ----


def test_random_cold_start_is_the_unbalanced_initial_set():
  key = jax.random.key(5)
  x = np.zeros((50, 3), np.float32)
  got = loop.cold_start_indices(key, "random", x, 7)
  want = loop.initial_indices(key, np.zeros(50, np.int32), 7, balanced=False, num_classes=1)
  assert got.tolist() == want.tolist() and len(set(got.tolist())) == 7


def test_typiclust_cold_start_takes_the_most_typical_point_of_every_blob(rng):
  sizes = [60, 45, 35, 25]
  centres = np.array([[0, 0, 0], [40, 0, 0], [0, 40, 0], [0, 0, 40]], np.float64)
  x = np.concatenate([c + rng.normal(size=(s, 3)) for c, s in zip(centres, sizes)])
  blob = np.repeat(np.arange(4), sizes)
  perm = rng.permutation(len(x))  # blobs are not contiguous in the pool
  x, blob = x[perm], blob[perm]
  got = loop.cold_start_indices(jax.random.key(int(rng.integers(1 << 30))), "typiclust",
                                x.astype(np.float32), 4)
  typ = _typicality_np(x, blob, 20)
  want = sorted(int(np.nonzero(blob == b)[0][np.argmax(typ[blob == b])]) for b in range(4))
  assert got.tolist() == want


def test_cold_start_invariants_with_a_candidate_subsample(rng):
  x = rng.normal(size=(300, 6)).astype(np.float32)
  for name in ("kmeans", "coreset", "typiclust", "probcover"):
    key = jax.random.key(int(rng.integers(1 << 30)))
    got = loop.cold_start_indices(key, name, x, 12, subsample=80)
    again = loop.cold_start_indices(key, name, x, 12, subsample=80)
    assert got.tolist() == again.tolist(), name  # same key, same set
    assert len(set(got.tolist())) == 12 and got.min() >= 0 and got.max() < 300, name
    assert (np.diff(got) > 0).all(), name


def test_cold_start_bad_input_is_refused():
  x = np.zeros((20, 2), np.float32)
  with pytest.raises(ValueError, match=r"unknown cold start 'bald'; valid: \['random'"):
    loop.cold_start_indices(jax.random.key(0), "bald", x, 3)
  with pytest.raises(ValueError, match=r"initial_size=30 must be in \[1, 20\]"):
    loop.cold_start_indices(jax.random.key(0), "typiclust", x, 30)
  x[4, 1] = np.nan
  with pytest.raises(ValueError, match="NaN or inf"):
    loop.cold_start_indices(jax.random.key(0), "typiclust", x, 3)
  with pytest.raises(ValueError, match="config.cold_start"):
    c = config_lib.default_config()
    c.cold_start = "bald"
    config_lib.check(c)


def test_simulated_runs_start_from_the_cold_start_and_go_on(tmp_path):
  c = config_lib.default_config()
  c.dataset, c.pool_size, c.test_size, c.val_size = "digits", 300, 100, 50
  c.cold_start, c.embeddings, c.initial_size, c.query_size, c.budget = "typiclust", "pca", 10, 10, 30
  c.mc_samples, c.pool_subsample, c.num_seeds, c.progress = 4, 120, 1, False
  c.train.max_steps, c.train.min_steps, c.train.min_epochs, c.train.eval_every = 20, 10, 1.0, 10
  splits = experiment.load_splits(c)
  run = experiment.build(c, splits)
  seed_run = experiment.SeedRun(run, c.seed, str(tmp_path / "s"))
  init_key, _ = jax.random.split(jax.random.key(c.seed))
  want = loop.cold_start_indices(init_key, "typiclust", selfsup.pca_embeddings(splits.pool.x), 10,
                                 subsample=120)
  assert np.nonzero(np.asarray(seed_run.state.labeled))[0].tolist() == want.tolist()
  seed_run.close()
  # Any acquisition runs on top of it, through the comparison runner.
  compare.compare(c, str(tmp_path / "cmp"), ["random", "bald"])
  for strategy in ("random", "bald"):
    records = analysis.load_metrics(str(tmp_path / "cmp" / strategy))[c.seed]
    assert [r["num_labels"] for r in records] == [10, 20, 30]
