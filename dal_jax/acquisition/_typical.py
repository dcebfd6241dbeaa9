"""Low-budget selection on (self-supervised) embeddings: TypiClust and ProbCover.

At tens of labels, uncertainty is uninformative (the model is poor) and the literature's answer
is to label *typical* points that cover the data (Hacohen, Dekel & Weinshall 2022, "Active
Learning on a Budget"; Yehuda, Dekel, Hacohen & Weinshall 2022, "Active Learning Through a
Covering Lens"). Both work on embeddings where distance means similarity — in dal_jax the
self-supervised embeddings of the pool (``dal_jax.selfsup``), read through
``Needs(embeddings=True)``.

As in core-set, rows outside ``where`` are the labeled points (they cover clusters and balls);
rows inside are the unlabeled candidates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dal_jax.acquisition import _diversity
from dal_jax.acquisition import _scores


def _sq_dists(x, y):
  return jnp.maximum(jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :]
                     - 2.0 * x @ y.T, 0.0)


def typicality(embeddings: ArrayLike, assign: ArrayLike, *, knn: int = 20,
               chunk_size: int = 1024) -> jax.Array:
  """``[N]`` typicality of every point within its cluster (Hacohen et al. 2022, Eq. 3):
  ``(1/K Σ_{x_i ∈ KNN(x)} ||x - x_i||)^-1`` over the K = min(knn, cluster size - 1) nearest other
  points of the same cluster (``assign`` ``[N]`` cluster ids; rows with id -1 get 0). A point
  alone in its cluster gets 0."""
  x = _diversity._centred(_diversity._check_embeddings(embeddings))
  assign = jnp.asarray(assign, jnp.int32)
  knn = _scores.count(knn, "knn")
  n = x.shape[0]
  kk = min(knn, max(n - 1, 1))
  idx = jnp.arange(n)
  pad = -n % chunk_size
  rows = jnp.pad(idx, (0, pad)).reshape(-1, chunk_size)

  def one(r):
    d2 = _sq_dists(x[r], x)
    same = (assign[r][:, None] == assign[None, :]) & (r[:, None] != idx[None, :])
    d = jnp.where(same, jnp.sqrt(d2), jnp.inf)
    near = -jax.lax.top_k(-d, kk)[0]  # [c, kk] smallest distances (inf where too few)
    finite = jnp.isfinite(near)
    count = jnp.sum(finite, -1)
    mean = jnp.sum(jnp.where(finite, near, 0.0), -1) / jnp.maximum(count, 1)
    return jnp.where(count > 0, 1.0 / jnp.maximum(mean, 1e-12), 0.0)

  t = jax.lax.map(one, rows).reshape(-1)[:n]
  return jnp.where(assign >= 0, t, 0.0)


def typiclust_from_clusters(typ: np.ndarray, assign: np.ndarray, candidates: np.ndarray, k: int,
                            *, min_cluster_size: int = 5) -> np.ndarray:
  """TypiClust's selection given clusters and typicalities (Hacohen et al. 2022, Alg. 1).

  k times: among clusters with an unlabeled candidate, take the one holding the fewest labeled
  (and already selected) points, the largest first among those (clusters of fewer than
  ``min_cluster_size`` points only when no other is left; remaining ties: lowest id), and select
  its most typical candidate (ties: lowest index).
  """
  assign = np.asarray(assign)
  typ = np.asarray(typ, np.float64)
  available = np.asarray(candidates, bool).copy()
  num = int(assign.max()) + 1
  size = np.bincount(assign[assign >= 0], minlength=num)
  covered = np.bincount(assign[(assign >= 0) & ~available], minlength=num).astype(np.int64)
  chosen = []
  for _ in range(k):
    open_ = np.bincount(assign[available & (assign >= 0)], minlength=num) > 0
    big = open_ & (size >= min_cluster_size)
    pool = big if big.any() else open_
    ids = np.nonzero(pool)[0]
    order = np.lexsort((ids, -size[ids], covered[ids]))  # fewest covered, largest, lowest id
    c = ids[order[0]]
    members = np.nonzero(available & (assign == c))[0]
    j = members[np.argmax(typ[members])]
    chosen.append(int(j))
    available[j] = False
    covered[c] += 1
  return np.asarray(chosen, np.int32)


def typiclust(embeddings: ArrayLike, k: int, *, key: jax.Array, where: ArrayLike | None = None,
              knn: int = 20, max_clusters: int = 500, min_cluster_size: int = 5,
              iters: int = 20) -> jax.Array:
  """TypiClust (Hacohen, Dekel & Weinshall 2022): k-means with min(labeled + k, max_clusters)
  clusters over labeled and candidate points, then the most typical candidate of the largest
  clusters not yet covered by labels (:func:`typiclust_from_clusters`)."""
  x = _diversity._centred(_diversity._check_embeddings(embeddings))
  candidates = _diversity._candidates(where, x.shape[0])
  k = _diversity._check_k(k, candidates)
  max_clusters = _scores.count(max_clusters, "max_clusters")
  num_labeled = int(x.shape[0] - jnp.sum(candidates))
  clusters = min(num_labeled + k, max_clusters, x.shape[0])
  _, assign = _diversity.kmeans(key, x, clusters, iters=iters)  # every row: labeled ones too
  typ = typicality(x, assign, knn=knn)
  return jnp.asarray(typiclust_from_clusters(np.asarray(typ), np.asarray(assign),
                                             np.asarray(candidates), k,
                                             min_cluster_size=min_cluster_size))


def ball_adjacency(x: jax.Array, radius: float, *, chunk_size: int = 1024) -> jax.Array:
  """``[N, N]`` bool, ``A[i, j] = ||x_i - x_j|| <= radius`` (self included), in row chunks."""
  n = x.shape[0]
  pad = -n % chunk_size
  xp = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, chunk_size, x.shape[1])
  r2 = jnp.float32(radius) ** 2
  a = jax.lax.map(lambda xc: _sq_dists(xc, x) <= r2, xp).reshape(-1, n)[:n]
  return a | jnp.eye(n, dtype=bool)


def probcover_from_adjacency(adj: np.ndarray, candidates: np.ndarray, k: int,
                             rng: np.random.Generator | None = None) -> np.ndarray:
  """ProbCover's greedy max cover (Yehuda et al. 2022, Alg. 1) on the δ-ball graph ``adj``.

  Points in a labeled point's ball start covered; k times, the candidate whose ball holds the
  most uncovered points is selected (ties: lowest index) and its ball becomes covered. Once
  everything is covered, the remaining picks are uniformly random candidates (``rng``) as in the
  paper (lowest indices without ``rng``).
  """
  adj = np.asarray(adj, bool)
  available = np.asarray(candidates, bool).copy()
  covered = adj[~available].any(axis=0)
  chosen = []
  for _ in range(k):
    degree = (adj & ~covered[None, :]).sum(axis=1)
    degree = np.where(available, degree, -1)
    if degree.max() <= 0:
      rest = np.nonzero(available)[0]
      j = int(rng.choice(rest)) if rng is not None else int(rest[0])
    else:
      j = int(np.argmax(degree))
    chosen.append(j)
    available[j] = False
    covered |= adj[j]
  return np.asarray(chosen, np.int32)


def purity_radius(x: jax.Array, assign: jax.Array, *, alpha: float = 0.95, samples: int = 2000,
                  key: jax.Array) -> float:
  """The largest δ whose balls are pure for at least ``alpha`` of the points: a ball is pure
  when every point in it shares its centre's k-means cluster (Yehuda et al. 2022, §4.1).
  Purity only falls as δ grows, so δ is the ``alpha`` quantile, over points, of the distance to
  the nearest point of another cluster (estimated on ``samples`` random points)."""
  n = x.shape[0]
  pick = jax.random.choice(key, n, (min(samples, n),), replace=False)
  d2 = _sq_dists(x[pick], x)
  other = assign[pick][:, None] != assign[None, :]
  nearest_other = jnp.sqrt(jnp.min(jnp.where(other, d2, jnp.inf), axis=1))
  finite = nearest_other[jnp.isfinite(nearest_other)]
  if finite.size == 0:
    return float(jnp.sqrt(jnp.max(d2)))
  # A ball is pure iff δ < distance to the nearest other-cluster point; quantile 1 - alpha of
  # those distances leaves alpha of the balls pure.
  return float(jnp.quantile(finite, 1.0 - alpha)) * (1 - 1e-6)


def probcover(embeddings: ArrayLike, k: int, *, key: jax.Array, where: ArrayLike | None = None,
              radius: float = 0.0, alpha: float = 0.95, clusters: int = 10,
              iters: int = 20) -> jax.Array:
  """ProbCover (Yehuda et al. 2022): greedy max coverage of δ-balls around the candidates
  (:func:`probcover_from_adjacency`). ``radius`` δ > 0 fixes the balls; 0 chooses δ by purity
  ``alpha`` of k-means with ``clusters`` clusters (:func:`purity_radius`; the paper uses the
  number of classes). Memory: the ``[N, N]`` boolean ball graph of the scored points."""
  x = _diversity._centred(_diversity._check_embeddings(embeddings))
  candidates = _diversity._candidates(where, x.shape[0])
  k = _diversity._check_k(k, candidates)
  radius = _diversity._finite_at_least(radius, 0.0, "radius")
  alpha = _diversity._finite_at_least(alpha, 0.0, "alpha")
  if alpha > 1:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  k_radius, k_means, k_rest = jax.random.split(key, 3)
  if radius == 0.0:
    clusters = min(_scores.count(clusters, "clusters"), x.shape[0])
    _, assign = _diversity.kmeans(k_means, x, clusters, iters=iters)
    radius = purity_radius(x, assign, alpha=alpha, key=k_radius)
  adj = np.asarray(ball_adjacency(x, radius))
  rng = np.random.default_rng(np.asarray(jax.random.key_data(k_rest)).ravel().tolist())
  return jnp.asarray(probcover_from_adjacency(adj, np.asarray(candidates), k, rng))


def gaussian_kernel(x: jax.Array, y: jax.Array, bandwidth: float) -> jax.Array:
  """``[n, m]`` ``exp(-||x - y||² / (2 σ²))``."""
  return jnp.exp(-_sq_dists(x, y) / (2.0 * bandwidth ** 2))


def median_bandwidth(x: jax.Array) -> float:
  """The median distance between distinct points of ``x`` (the usual kernel width)."""
  d = jnp.sqrt(_sq_dists(x, x))
  n = x.shape[0]
  off = d[~jnp.eye(n, dtype=bool)]
  return float(jnp.maximum(jnp.median(off), 1e-6)) if n > 1 else 1.0


def maxherding(embeddings: ArrayLike, k: int, *, key: jax.Array,
               where: ArrayLike | None = None, num_targets: int = 500,
               bandwidth: float = 0.0, chunk_size: int = 1024) -> jax.Array:
  """MaxHerding-style selection (Bae et al. 2024, generalized coverage): greedy kernel herding
  that maximises the coverage ``Σ_x max_{s ∈ L ∪ B} k(x, s)`` of target points ``x`` by the
  labeled points ``L`` (outside ``where``) and the batch ``B``.

  Each step adds the candidate with the largest gain ``Σ_x max(k(x, c) - m(x), 0)``, ``m`` the
  current coverage of each target. The targets are ``num_targets`` points drawn from the pool
  (all of it when smaller), so the kernel block is ``[N, num_targets]``, never ``[N, N]``; ``k``
  is Gaussian with width ``bandwidth`` (0: the median distance between targets).

  Returns:
    ``[k]`` distinct candidate indices, in the order chosen.
  """
  x = _diversity._check_embeddings(embeddings)
  n = x.shape[0]
  candidates = _diversity._candidates(where, n)
  k = _diversity._check_k(k, candidates)
  num_targets = _scores.count(num_targets, "num_targets")
  chunk_size = _scores.count(chunk_size, "chunk_size")
  if not (isinstance(bandwidth, (int, float)) and np.isfinite(bandwidth) and bandwidth >= 0):
    raise ValueError(f"maxherding's bandwidth must be a finite number >= 0 (0: the median "
                     f"distance), got {bandwidth!r}")
  targets = (jnp.arange(n) if num_targets >= n
             else jax.random.choice(key, n, (num_targets,), replace=False))
  t = x[targets]
  sigma = float(bandwidth) if bandwidth > 0 else median_bandwidth(t)
  kernel = jnp.concatenate([gaussian_kernel(x[s:s + chunk_size], t, sigma)
                            for s in range(0, n, chunk_size)])  # [N, M]
  covered = jnp.max(jnp.where(candidates[:, None], 0.0, kernel), axis=0)  # labeled coverage

  def step(i, carry):
    covered, chosen, free = carry
    gains = jnp.sum(jnp.maximum(kernel - covered[None], 0.0), axis=1)
    c = jnp.argmax(jnp.where(free, gains, -jnp.inf))
    return (jnp.maximum(covered, kernel[c]), chosen.at[i].set(c), free.at[c].set(False))

  _, chosen, _ = jax.lax.fori_loop(0, k, step,
                                   (covered, jnp.zeros(k, jnp.int32), candidates))
  return chosen
