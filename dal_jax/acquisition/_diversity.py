"""Batch-aware selection in embedding space, with O(N) running state (never an N x N matrix).

* BADGE (Ash et al. 2020): k-means++ seeding on last-layer gradient embeddings
  ``g_i = (p_i - onehot(ŷ_i)) ⊗ h_i``, with distances factorised as
  ``‖g_i - g_j‖² = ‖a_i‖²‖h_i‖² + ‖a_j‖²‖h_j‖² - 2 (a_i·a_j)(h_i·h_j)`` (a = p - onehot), so the
  C·D embedding is never formed: memory O(N (C + D)).
* Core-set (Sener & Savarese 2018): k-center greedy from the labeled set.
* k-means (k-means++ seeding + Lloyd), DMBAL (Zhdanov 2019), Cluster-Margin (Citovsky et al.
  2021), uncertainty minus redundancy (Yin et al. 2017), k-DPP sampling (Kulesza & Taskar 2011,
  as used for batch active learning by Bıyık et al. 2019).
* Expected gradient length (Settles et al. 2007) and entropy gradnorm (Wang et al. 2022) from the
  same last-layer gradient algebra.

Greedy loops run inside ``lax.fori_loop`` keeping a ``[N]`` min-distance (or max-similarity)
vector. Candidates are given by ``where`` (``~labeled``); non-candidates are treated as labeled.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dal_jax.acquisition import _scores

_FLOOR = -1e30  # log-weight of zero-distance candidates: chosen only after all others


def _check_k(k: int, candidates: jax.Array) -> int:
  k = _scores.count(k)
  n_candidates = int(jnp.sum(candidates))
  if k > n_candidates:
    raise ValueError(f"cannot select k={k} points: only {n_candidates} unlabeled candidates "
                     f"remain in a pool of {candidates.shape[0]}")
  return k


def _finite_at_least(value, lo: float, name: str) -> float:
  if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number))
      or not np.isfinite(value) or value < lo):
    raise ValueError(f"{name} must be a finite number >= {lo:g}, got {value!r}")
  return float(value)


def _centred(x: jax.Array) -> jax.Array:
  """``x`` minus its row mean. Squared distances ``‖x‖² + ‖y‖² - 2 x·y`` cancel catastrophically
  in float32 when the embeddings' norms dwarf their spread (a common offset); distances are
  translation invariant, so every distance-based selection works on centred embeddings."""
  return x - jnp.mean(x, axis=0, keepdims=True)


def _check_embeddings(x: ArrayLike, n: int | None = None, name: str = "embeddings") -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be shaped [N, D], got {x.shape}")
  if n is not None and x.shape[0] != n:
    raise ValueError(f"{name} has {x.shape[0]} rows, expected N={n}")
  if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError(f"{name} contain NaN or inf")
  return x.astype(jnp.float32)


def _candidates(where, n) -> jax.Array:
  where = _scores.validate_where(where, n)
  return jnp.ones(n, bool) if where is None else where


def item_batch_inputs(name: str, log_probs: ArrayLike, k: int, where: ArrayLike | None,
                      pre_logits: ArrayLike | None = None):
  """The checked inputs of a batch method that reads one class distribution per item:
  ``(log_probs [S, N, C], pre_logits [N, D] or None, candidates [N], k)``; a per-element
  prediction, a row count that differs or a k above the candidates is refused naming ``name``."""
  log_probs = _scores.validate_log_probs(log_probs)
  if log_probs.ndim != 3:
    raise ValueError(f"{name} needs [S, N, C] log-probs (one class distribution per item), got "
                     f"{log_probs.shape}")
  n = log_probs.shape[1]
  h = None if pre_logits is None else _check_embeddings(pre_logits, n, "pre_logits")
  candidates = _candidates(where, n)
  return log_probs, h, candidates, _check_k(k, candidates)


def distinct_rows(x: jax.Array, mask: jax.Array) -> jax.Array:
  """``[N]`` bool: the rows of ``mask`` whose value is the first occurrence among them. The loop
  pads the labeled block of a subsampled pool by repeating one labeled position, so a method that
  sums or averages over the labeled rows counts identical labeled rows once (host-side NumPy;
  ``x`` is one row of values per item, e.g. ``[N, D + C]``)."""
  xs, ms = np.asarray(x), np.asarray(mask, bool)
  keep = np.zeros(ms.shape[0], bool)
  rows = np.nonzero(ms)[0]
  if rows.size:
    _, first = np.unique(xs[rows], axis=0, return_index=True)
    keep[rows[first]] = True
  return jnp.asarray(keep)


# ---------------------------------------------------------------- gradient embeddings (BADGE)

def gradient_embedding_factors(log_probs: ArrayLike, pre_logits: ArrayLike):
  """Factors of the last-layer gradient embedding ``g = a ⊗ h`` (Ash et al. 2020).

  Args:
    log_probs: ``[S, N, C]``; the mean prediction p̄ and its argmax ŷ (hallucinated label) are used.
    pre_logits: ``[N, D]`` penultimate features h.

  Returns:
    ``(a [N, C], h [N, D])`` with ``a = p̄ - onehot(ŷ)``: the cross-entropy gradient with respect to
    the last layer's kernel is ``h ⊗ a``.
  """
  log_probs = _scores.validate_log_probs(log_probs)
  h = _check_embeddings(pre_logits, log_probs.shape[1], "pre_logits")
  p = jnp.exp(_scores.mean_log_probs(log_probs))
  a = p - jax.nn.one_hot(jnp.argmax(p, -1), p.shape[-1])
  return a, h


def factored_sq_distances(a, m, d, j):
  """``‖g_i - g_j‖²`` for all i, with ``g = a ⊗ h`` never formed; O(N (C + D)).

  ``h = m + d`` is split into the mean ``m`` and centred features ``d`` so that no term cancels
  catastrophically when ``‖h‖`` dwarfs the spread of ``h``::

    ‖a_i⊗h_i - a_j⊗h_j‖² = ‖a_i - a_j‖² ‖m‖² + 2 (a_i·(a_i - a_j)) (m·d_i)
                           - 2 (a_j·(a_i - a_j)) (m·d_j) + ‖a_i⊗d_i - a_j⊗d_j‖²
  """
  da = a - a[j]
  md = d @ m
  dd = jnp.sum(a * a, -1) * jnp.sum(d * d, -1)
  cross = dd + dd[j] - 2.0 * (a @ a[j]) * (d @ d[j])
  return jnp.maximum(jnp.sum(da * da, -1) * jnp.dot(m, m) + 2.0 * jnp.sum(a * da, -1) * md
                     - 2.0 * (da @ a[j]) * md[j] + cross, 0.0)


def explicit_sq_distances(x, j):
  sq = jnp.sum(x * x, -1)
  return jnp.maximum(sq + sq[j] - 2.0 * (x @ x[j]), 0.0)


@functools.partial(jax.jit, static_argnames=("k", "dist_fn", "first"))
def _kmeanspp_seeding(key, factors, self_sq, candidates, *, k: int, dist_fn: Callable,
                      first: str):
  n = candidates.shape[0]
  if first == "max_norm":
    j0 = jnp.argmax(jnp.where(candidates, self_sq, -jnp.inf))
  else:
    j0 = jnp.argmax(jnp.where(candidates, jax.random.gumbel(jax.random.fold_in(key, 0), (n,)),
                              -jnp.inf))
  chosen = jnp.zeros(k, jnp.int32).at[0].set(j0)
  available = candidates.at[j0].set(False)
  min_d2 = dist_fn(*factors, j0)

  def body(t, carry):
    chosen, available, min_d2 = carry
    log_w = jnp.where(min_d2 > 0, jnp.log(jnp.maximum(min_d2, 1e-38)), _FLOOR)
    g = jax.random.gumbel(jax.random.fold_in(key, t), (n,))
    j = jnp.argmax(jnp.where(available, log_w + g, -jnp.inf))
    return (chosen.at[t].set(j), available.at[j].set(False),
            jnp.minimum(min_d2, dist_fn(*factors, j)))

  chosen, _, _ = jax.lax.fori_loop(1, k, body, (chosen, available, min_d2))
  return chosen


def badge(log_probs: ArrayLike, pre_logits: ArrayLike, k: int, *, key: jax.Array,
          where: ArrayLike | None = None) -> jax.Array:
  """BADGE: k-means++ seeding on gradient embeddings, distances factorised (O(N(C+D)) memory).

  The first centre is the candidate with the largest gradient norm (as in Ash et al.'s reference
  code); each next one is drawn with probability ∝ D² (squared distance to the nearest chosen
  centre) by the Gumbel-max trick with key ``fold_in(key, t)``. Candidates at distance 0 from the
  chosen centres (duplicates) are taken only when no other candidate is left.

  Returns:
    ``[k]`` distinct candidate indices.

  References:
    Ash, Zhang, Krishnamurthy, Langford & Agarwal, "Deep Batch Active Learning by Diverse,
    Uncertain Gradient Lower Bounds", ICLR 2020; Arthur & Vassilvitskii 2007 (k-means++).
  """
  a, h = gradient_embedding_factors(log_probs, pre_logits)
  candidates = _candidates(where, a.shape[0])
  k = _check_k(k, candidates)
  self_sq = jnp.sum(a * a, -1) * jnp.sum(h * h, -1)
  m = jnp.mean(h, axis=0)
  return _kmeanspp_seeding(key, (a, m, h - m), self_sq, candidates, k=k,
                           dist_fn=factored_sq_distances, first="max_norm")


def kmeans_pp(key: jax.Array, x: ArrayLike, k: int, *, where: ArrayLike | None = None,
              first: str = "random") -> jax.Array:
  """k-means++ seeding on explicit embeddings ``x [N, D]``; returns ``[k]`` candidate indices.

  ``first="max_norm"`` starts from the largest-norm candidate (BADGE on explicit embeddings, e.g.
  exact per-example gradients from :func:`gradient_embeddings`); ``"random"`` uniformly.
  """
  if first not in ("random", "max_norm"):
    raise ValueError(f"first must be 'random' or 'max_norm', got {first!r}")
  x = _check_embeddings(x)
  candidates = _candidates(where, x.shape[0])
  k = _check_k(k, candidates)
  self_sq = jnp.sum(x * x, -1)  # the first "max_norm" pick is about norms, not distances
  return _kmeanspp_seeding(key, (_centred(x),), self_sq, candidates, k=k,
                           dist_fn=explicit_sq_distances, first=first)


def gradient_embeddings(model, variables, x, *, select: Callable[[tuple], bool] | None = None,
                        chunk_size: int = 256) -> jax.Array:
  """Exact per-example gradient embeddings, ``jax.vmap(jax.grad)`` of the cross-entropy at the
  model's own prediction ŷ, for the parameters picked by ``select(path)`` (default: the ``head``).

  Args:
    model: a :class:`dal_jax.models.Model`.
    variables: its variables.
    x: ``[N, ...]`` inputs.
    select: ``path -> bool`` on the parameter's key path (a tuple of names).
    chunk_size: examples per compiled call.

  Returns:
    ``[N, P]`` flattened gradients (P = size of the selected parameters).
  """
  select = select or (lambda path: "head" in path)
  params = variables["params"]
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]

  def path_names(path):
    return tuple(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)

  mask = [bool(select(path_names(path))) for path, _ in leaves]
  if not any(mask):
    raise ValueError("`select` picked no parameters; paths are e.g. "
                     f"{[path_names(p) for p, _ in leaves[:4]]}")

  @jax.jit
  def chunk_grads(xc):
    def one(xi):
      def loss(p):
        logits, _ = model.apply({**variables, "params": p}, xi[None], train=False)
        y_hat = jax.lax.stop_gradient(jnp.argmax(logits, -1))
        return -jnp.sum(jax.nn.log_softmax(logits) * jax.nn.one_hot(y_hat, logits.shape[-1]))

      grads = jax.tree_util.tree_leaves(jax.grad(loss)(params))
      return jnp.concatenate([g.reshape(-1) for g, m in zip(grads, mask) if m])

    return jax.vmap(one)(xc)

  out = []
  for start in range(0, x.shape[0], chunk_size):
    xc = jnp.asarray(x[start:start + chunk_size])
    valid = xc.shape[0]
    if valid < chunk_size and x.shape[0] > chunk_size:
      xc = jnp.concatenate([xc, jnp.zeros((chunk_size - valid, *xc.shape[1:]), xc.dtype)])
    out.append(chunk_grads(xc)[:valid])
  return jnp.concatenate(out)


# ---------------------------------------------------------------- core-set (k-center greedy)

@functools.partial(jax.jit, static_argnames=("chunk",))
def _min_sq_dist_to_set(x, centers_idx, valid, *, chunk: int):
  """``min_{j in centers} ‖x_i - x_j‖²`` for all i, scanning centres in chunks (O(N·chunk))."""
  sq = jnp.sum(x * x, -1)
  idx = centers_idx.reshape(-1, chunk)
  ok = valid.reshape(-1, chunk)

  def body(min_d2, args):
    cidx, cok = args
    c = x[cidx]  # [chunk, D]
    d2 = jnp.maximum(sq[:, None] + sq[cidx][None, :] - 2.0 * x @ c.T, 0.0)
    return jnp.minimum(min_d2, jnp.min(jnp.where(cok[None, :], d2, jnp.inf), axis=1)), None

  min_d2, _ = jax.lax.scan(body, jnp.full(x.shape[0], jnp.inf), (idx, ok))
  return min_d2


@functools.partial(jax.jit, static_argnames=("k",))
def _kcenter_loop(x, min_d2, available, *, k: int):
  def body(t, carry):
    chosen, available, min_d2 = carry
    j = jnp.argmax(jnp.where(available, min_d2, -jnp.inf))
    return (chosen.at[t].set(j), available.at[j].set(False),
            jnp.minimum(min_d2, explicit_sq_distances(x, j)))

  chosen, _, _ = jax.lax.fori_loop(0, k, body, (jnp.zeros(k, jnp.int32), available, min_d2))
  return chosen


def coreset(embeddings: ArrayLike, k: int, *, key: jax.Array, where: ArrayLike | None = None,
            outliers: int = 0, chunk_size: int = 256) -> jax.Array:
  """Core-set selection by k-center greedy (Sener & Savarese 2018).

  Starting from the labeled points (the non-candidates) as centres, repeatedly adds the candidate
  farthest from its nearest centre. Only a ``[N]`` min-distance vector is kept.

  Args:
    key: used only when nothing is labeled (the first centre is then a random candidate).
    embeddings: ``[N, D]`` (e.g. ``pre_logits``).
    k: batch size.
    where: ``[N]`` candidate mask; points outside it are the labeled centres.
    outliers: robust variant's outlier budget: the ``outliers`` candidates farthest from the
      labeled set are treated as outliers and never chosen (a greedy stand-in for the paper's
      mixed-integer program).
    chunk_size: labeled centres processed at once when initialising distances.

  Returns:
    ``[k]`` distinct candidate indices, in the order chosen.
  """
  x = _centred(_check_embeddings(embeddings))
  n = x.shape[0]
  candidates = _candidates(where, n)
  outliers = _scores.count(outliers, "outliers", minimum=0)
  chunk_size = _scores.count(chunk_size, "chunk_size")
  k = _scores.count(k)
  _check_k(k + outliers, candidates)
  labeled_idx = np.nonzero(~np.asarray(candidates))[0]
  if labeled_idx.size == 0:
    first = jnp.argmax(jnp.where(candidates, jax.random.gumbel(key, (n,)), -jnp.inf))
    labeled_idx = np.array([int(first)])
    candidates = candidates.at[first].set(False)
    k_rest, head = k - 1, [int(first)]
  else:
    k_rest, head = k, []
  pad = -labeled_idx.size % chunk_size
  centers = jnp.asarray(np.concatenate([labeled_idx, np.zeros(pad, np.int64)]), jnp.int32)
  valid = jnp.asarray(np.concatenate([np.ones(labeled_idx.size, bool), np.zeros(pad, bool)]))
  min_d2 = _min_sq_dist_to_set(x, centers, valid, chunk=chunk_size)
  available = candidates
  if outliers:
    far = jax.lax.top_k(jnp.where(candidates, min_d2, -jnp.inf), outliers)[1]
    available = available.at[far].set(False)
  if k_rest == 0:
    return jnp.asarray(head, jnp.int32)
  rest = _kcenter_loop(x, min_d2, available, k=k_rest)
  return jnp.concatenate([jnp.asarray(head, jnp.int32), rest])


# ---------------------------------------------------------------- k-means family

@functools.partial(jax.jit, static_argnames=("chunk",))
def _assign(x, centers, *, chunk: int):
  """Nearest centre and its squared distance for every row, in chunks of rows (O(chunk · k))."""
  n = x.shape[0]
  pad = -n % chunk
  xp = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, chunk, x.shape[1])
  csq = jnp.sum(centers * centers, -1)

  def one(xc):
    d2 = jnp.maximum(jnp.sum(xc * xc, -1)[:, None] + csq[None, :] - 2.0 * xc @ centers.T, 0.0)
    return jnp.argmin(d2, -1), jnp.min(d2, -1)

  a, d = jax.lax.map(one, xp)
  return a.reshape(-1)[:n], d.reshape(-1)[:n]


def kmeans(key: jax.Array, x: ArrayLike, num_clusters: int, *, weights: ArrayLike | None = None,
           where: ArrayLike | None = None, iters: int = 20, chunk_size: int = 2048):
  """Weighted k-means (k-means++ seeding, then Lloyd iterations) on the candidates.

  Empty clusters keep their previous centre (no centre collapses to the origin).

  Returns:
    ``(centers [num_clusters, D], assignment [N])``; non-candidates are assigned ``-1``.
  """
  x = _check_embeddings(x)
  mean = jnp.mean(x, axis=0, keepdims=True)
  x = x - mean  # see _centred; the centres are shifted back before they are returned
  candidates = _candidates(where, x.shape[0])
  num_clusters = _check_k(num_clusters, candidates)
  iters = _scores.count(iters, "iters", minimum=0)
  w = jnp.ones(x.shape[0]) if weights is None else jnp.asarray(weights, jnp.float32)
  if w.shape != (x.shape[0],) or not bool(jnp.all((w >= 0) & jnp.isfinite(w))):
    raise ValueError(f"weights must be a finite, non-negative [N={x.shape[0]}] vector")
  w = jnp.where(candidates, w, 0.0)
  seeds = kmeans_pp(key, x, num_clusters, where=candidates)
  centers = x[seeds]
  for _ in range(iters):
    assign, _ = _assign(x, centers, chunk=chunk_size)
    sums = jax.ops.segment_sum(w[:, None] * x, assign, num_segments=num_clusters)
    mass = jax.ops.segment_sum(w, assign, num_segments=num_clusters)
    new = jnp.where(mass[:, None] > 0, sums / jnp.maximum(mass, 1e-12)[:, None], centers)
    if bool(jnp.allclose(new, centers)):
      centers = new
      break
    centers = new
  assign, _ = _assign(x, centers, chunk=chunk_size)
  return centers + mean, jnp.where(candidates, assign, -1)


def _nearest_distinct(x, centers, candidates) -> jax.Array:
  """For each centre in turn, the nearest candidate not already taken."""
  sq = jnp.sum(x * x, -1)

  def body(available, c):
    d2 = sq - 2.0 * x @ c
    j = jnp.argmin(jnp.where(available, d2, jnp.inf))
    return available.at[j].set(False), j

  _, chosen = jax.lax.scan(body, candidates, centers)
  return chosen


def kmeans_select(embeddings: ArrayLike, k: int, *, key: jax.Array,
                  where: ArrayLike | None = None, weights: ArrayLike | None = None,
                  iters: int = 20) -> jax.Array:
  """k-means with k clusters on the candidates; returns the candidate nearest each centre."""
  x = _centred(_check_embeddings(embeddings))
  candidates = _candidates(where, x.shape[0])
  k = _check_k(k, candidates)
  centers, _ = kmeans(key, x, k, weights=weights, where=candidates, iters=iters)
  return _nearest_distinct(x, centers, candidates)


def margin_informativeness(log_probs) -> jax.Array:
  """``1 - (p̄_(1) - p̄_(2))`` in [0, 1]: higher for smaller margins."""
  return 1.0 + _scores.margin(log_probs)


def dmbal(log_probs: ArrayLike, embeddings: ArrayLike, k: int, *, key: jax.Array,
          where: ArrayLike | None = None, beta: int = 10, iters: int = 20) -> jax.Array:
  """DMBAL, Diverse Mini-Batch Active Learning (Zhdanov 2019).

  Pre-filters the ``beta * k`` most informative candidates (smallest margin), runs k-means with k
  clusters on them weighted by informativeness, and returns the pre-filtered candidate nearest
  each centre.
  """
  log_probs = _scores.validate_log_probs(log_probs)
  x = _check_embeddings(embeddings, log_probs.shape[1])
  candidates = _candidates(where, x.shape[0])
  k = _check_k(k, candidates)
  beta = _scores.count(beta, "dmbal's beta (pre-filter multiple)")
  info = margin_informativeness(log_probs)
  m = min(beta * k, int(jnp.sum(candidates)))
  top = jax.lax.top_k(jnp.where(candidates, info, -jnp.inf), m)[1]
  filtered = jnp.zeros_like(candidates).at[top].set(True)
  return kmeans_select(x, k, where=filtered, weights=info + 1e-6, iters=iters, key=key)


def dropout_disagreement(log_probs: ArrayLike) -> jax.Array:
  """``[N]`` the fraction of the S dropout samples whose predicted class differs from the
  class of the mean prediction (DropQuery's inconsistency under feature dropout)."""
  log_probs = _scores.validate_log_probs(log_probs)
  mean_class = jnp.argmax(_scores.mean_log_probs(log_probs), axis=-1)
  return jnp.mean(jnp.argmax(log_probs, axis=-1) != mean_class[None], axis=0)


def dropquery(log_probs: ArrayLike, embeddings: ArrayLike, k: int, *, key: jax.Array,
              where: ArrayLike | None = None, threshold: float = 0.5,
              iters: int = 20) -> jax.Array:
  """DropQuery-style selection (Gupte et al. 2024): candidates whose prediction is inconsistent
  under dropout, then k-means among them.

  A candidate is inconsistent when more than ``threshold`` of its S MC-dropout samples (dropout
  on the features before the head: the samples of ``log_probs``) predict another class than
  the mean prediction. k-means with k clusters on the inconsistent candidates' embeddings
  returns the one nearest each centre. With fewer than k inconsistent candidates, the k most
  inconsistent candidates are clustered instead (our rule; the paper's fill-up is not stated
  in the material we had).
  """
  log_probs = _scores.validate_log_probs(log_probs)
  x = _check_embeddings(embeddings, log_probs.shape[1])
  candidates = _candidates(where, x.shape[0])
  k = _check_k(k, candidates)
  if not (isinstance(threshold, (int, float)) and 0 <= threshold < 1):
    raise ValueError(f"dropquery's threshold must be a number in [0, 1), got {threshold!r}")
  disagree = dropout_disagreement(log_probs)
  inconsistent = candidates & (disagree > threshold)
  top = jax.lax.top_k(jnp.where(candidates, disagree, -jnp.inf), k)[1]
  most = jnp.zeros_like(candidates).at[top].set(True)
  chosen = jnp.where(jnp.sum(inconsistent) >= k, inconsistent, most)
  return kmeans_select(x, k, where=chosen, iters=iters, key=key)


def cluster_margin(log_probs: ArrayLike, embeddings: ArrayLike, k: int, *, key: jax.Array,
                   where: ArrayLike | None = None, num_clusters: int = 50,
                   margin_multiple: float = 10.0, iters: int = 20) -> jax.Array:
  """Cluster-Margin (Citovsky et al. 2021).

  Clusters the candidates (k-means here, where the paper uses agglomerative clustering), takes
  the ``margin_multiple * k`` lowest-margin candidates, and picks from their clusters round-robin,
  smallest cluster first, a random member each time, until k are chosen.
  """
  log_probs = _scores.validate_log_probs(log_probs)
  x = _check_embeddings(embeddings, log_probs.shape[1])
  candidates = _candidates(where, x.shape[0])
  k = _check_k(k, candidates)
  num_clusters = _scores.count(num_clusters, "num_clusters")
  _finite_at_least(margin_multiple, 1.0, "margin_multiple")
  n_cand = int(jnp.sum(candidates))
  cluster_key, pick_key = jax.random.split(key)
  _, assign = kmeans(cluster_key, x, min(num_clusters, n_cand), where=candidates, iters=iters)
  m = min(max(int(margin_multiple * k), k), n_cand)
  low_margin = np.asarray(jax.lax.top_k(jnp.where(candidates, _scores.margin(log_probs),
                                                  -jnp.inf), m)[1])
  assign = np.asarray(assign)[low_margin]
  order = np.asarray(jax.random.permutation(pick_key, m))  # random member order within clusters
  members: dict[int, list[int]] = {}
  for i in order:
    members.setdefault(int(assign[i]), []).append(int(low_margin[i]))
  queues = sorted(members.values(), key=len)
  chosen: list[int] = []
  while len(chosen) < k:
    for q in queues:
      if q and len(chosen) < k:
        chosen.append(q.pop())
  return jnp.asarray(chosen, jnp.int32)


# ---------------------------------------------------------------- uncertainty minus redundancy

@functools.partial(jax.jit, static_argnames=("k",))
def _umr_loop(u, xn, max_sim, available, alpha, *, k: int):
  def body(t, carry):
    chosen, available, max_sim = carry
    j = jnp.argmax(jnp.where(available, u - alpha * max_sim, -jnp.inf))
    return (chosen.at[t].set(j), available.at[j].set(False), jnp.maximum(max_sim, xn @ xn[j]))

  chosen, _, _ = jax.lax.fori_loop(0, k, body, (jnp.zeros(k, jnp.int32), available, max_sim))
  return chosen


def uncertainty_minus_redundancy(log_probs: ArrayLike, embeddings: ArrayLike, k: int, *,
                                 key: jax.Array | None = None,
                                 where: ArrayLike | None = None, alpha: float = 1.0,
                                 chunk_size: int = 256) -> jax.Array:
  """Greedy ``H(x) - α · max_{s ∈ L ∪ B} cos(x, s)`` (Exploration-P style uncertainty minus
  redundancy; Yin et al. 2017). ``L`` = non-candidates, B = points chosen so far. O(N) state."""
  log_probs = _scores.validate_log_probs(log_probs)
  x = _check_embeddings(embeddings, log_probs.shape[1])
  candidates = _candidates(where, x.shape[0])
  k = _check_k(k, candidates)
  _finite_at_least(alpha, 0.0, "umr's alpha")
  chunk_size = _scores.count(chunk_size, "chunk_size")
  xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  labeled_idx = np.nonzero(~np.asarray(candidates))[0]
  max_sim = jnp.full(x.shape[0], -1.0)
  for start in range(0, labeled_idx.size, chunk_size):  # similarity to the labeled set, chunked
    c = xn[labeled_idx[start:start + chunk_size]]
    max_sim = jnp.maximum(max_sim, jnp.max(xn @ c.T, axis=1))
  u = _scores.predictive_entropy(log_probs)
  del key  # deterministic; accepted so every batch method has one signature
  return _umr_loop(u, xn, max_sim, candidates, jnp.float32(alpha), k=k)


# ---------------------------------------------------------------- k-DPP

def _elementary_symmetric(lam: np.ndarray, k: int) -> np.ndarray:
  """``E[l, n] = e_l(λ_1..λ_n)`` for l <= k (Kulesza & Taskar 2012, Alg. 7), float64."""
  n = lam.shape[0]
  e = np.zeros((k + 1, n + 1))
  e[0, :] = 1.0
  for l in range(1, k + 1):
    for m in range(1, n + 1):
      e[l, m] = e[l, m - 1] + lam[m - 1] * e[l - 1, m - 1]
  return e


def kdpp(log_probs: ArrayLike, embeddings: ArrayLike, k: int, *, key: jax.Array,
         where: ArrayLike | None = None, quality: str = "entropy") -> jax.Array:
  """Samples a k-DPP over the candidates with the low-rank kernel ``L = B Bᵀ``,
  ``B_i = q_i · x_i / ‖x_i‖`` (quality q = predictive entropy, or 1 with ``quality="none"``).

  Uses the dual representation (Kulesza & Taskar 2012, Alg. 8 + dual sampling): the D x D matrix
  ``Bᵀ B`` is eigendecomposed, k eigenvectors are drawn by elementary symmetric polynomials,
  and items are drawn one by one from the projected eigenbasis. Memory O(N D); requires
  ``k <= rank(B) <= D``.
  """
  log_probs = _scores.validate_log_probs(log_probs)
  x = _check_embeddings(embeddings, log_probs.shape[1])
  candidates = _candidates(where, x.shape[0])
  k = _check_k(k, candidates)
  if quality not in ("entropy", "none"):
    raise ValueError(f"quality must be 'entropy' or 'none', got {quality!r}")
  cand_idx = np.nonzero(np.asarray(candidates))[0]
  xn = np.asarray(x, np.float64)[cand_idx]
  xn /= np.maximum(np.linalg.norm(xn, axis=1, keepdims=True), 1e-12)
  q = (np.asarray(_scores.predictive_entropy(log_probs), np.float64)[cand_idx]
       if quality == "entropy" else np.ones(cand_idx.size))
  b = xn * q[:, None]
  lam, vec = np.linalg.eigh(b.T @ b)
  keep = lam > 1e-10 * max(lam.max(), 1e-300)
  lam, vec = lam[keep], vec[:, keep]
  if lam.size < k:
    raise ValueError(f"k-DPP needs k <= rank of the kernel; rank is {lam.size} < k={k} "
                     "(embeddings too low-dimensional or degenerate)")
  u = np.asarray(jax.random.uniform(key, (lam.size + k,)), np.float64)
  # Phase 1: choose k eigenvectors.
  e = _elementary_symmetric(lam, k)
  chosen_eig, remaining, t = [], k, 0
  for m in range(lam.size, 0, -1):
    if remaining == 0:
      break
    if u[t] < lam[m - 1] * e[remaining - 1, m - 1] / e[remaining, m]:
      chosen_eig.append(m - 1)
      remaining -= 1
    t += 1
  v = b @ (vec[:, chosen_eig] / np.sqrt(lam[chosen_eig]))  # [n_cand, k] orthonormal columns
  # Phase 2: draw items from the projection DPP spanned by v.
  items = []
  for i in range(k):
    prob = np.sum(v * v, axis=1)
    prob[items] = 0.0
    prob = np.maximum(prob, 0.0) / prob.sum()
    j = int(np.searchsorted(np.cumsum(prob), u[lam.size + i] * (1 - 1e-12), side="right"))
    j = min(j, prob.size - 1)
    items.append(j)
    col = int(np.argmax(np.abs(v[j])))
    vj = v[:, col] / v[j, col]
    v = v - np.outer(vj, v[j])
    v = np.delete(v, col, axis=1)
    if v.shape[1]:
      v, _ = np.linalg.qr(v)
  return jnp.asarray(cand_idx[items], jnp.int32)


# ---------------------------------------------------------------- gradient-length scores

def expected_gradient_length(log_probs: ArrayLike, pre_logits: ArrayLike, *,
                             where: ArrayLike | None = None) -> jax.Array:
  """EGL (Settles, Craven & Ray 2007) of the last layer (kernel and bias):
  ``Σ_c p̄_c ‖∇_W ℓ(x, c)‖ = ‖[h; 1]‖ · Σ_c p̄_c ‖p̄ - e_c‖``. Also Wang et al. 2022's
  expected-gradnorm on the last layer."""
  log_probs = _scores.validate_log_probs(log_probs)
  h = _check_embeddings(pre_logits, log_probs.shape[1], "pre_logits")
  p = jnp.exp(_scores.mean_log_probs(log_probs))  # [N, C]
  c = p.shape[-1]
  diff = p[:, None, :] - jnp.eye(c)[None]  # [N, C(label), C]
  per_label = jnp.linalg.norm(diff, axis=-1)  # ‖p - e_c‖
  h_norm = jnp.sqrt(jnp.sum(h * h, -1) + 1.0)
  return _scores.apply_where(h_norm * jnp.sum(p * per_label, -1), where)


def entropy_gradnorm(log_probs: ArrayLike, pre_logits: ArrayLike, *,
                     where: ArrayLike | None = None) -> jax.Array:
  """Entropy gradnorm (Wang et al. 2022) of the last layer: ``‖∇_W H[p(y|x)]‖`` with
  ``∂H/∂z_c = -p_c (log p_c + H)``, so the norm is ``‖[h; 1]‖ · ‖p ⊙ (log p + H)‖``."""
  log_probs = _scores.validate_log_probs(log_probs)
  h = _check_embeddings(pre_logits, log_probs.shape[1], "pre_logits")
  lp = _scores.mean_log_probs(log_probs)
  p = jnp.exp(lp)
  ent = -jnp.sum(jnp.where(p > 0, p * lp, 0.0), -1, keepdims=True)
  dz = -jnp.where(p > 0, p * (lp + ent), 0.0)
  h_norm = jnp.sqrt(jnp.sum(h * h, -1) + 1.0)
  return _scores.apply_where(h_norm * jnp.linalg.norm(dz, axis=-1), where)
