"""BAIT: batch selection by the Fisher information of the last layer (Ash, Goel, Krishnamurthy &
Kakade 2021, "Gone Fishing: Neural Active Learning with Fisher Embeddings").

The last layer ``logits = W h`` of a softmax classifier has, at an input with predictive
distribution ``p`` and features ``h``, the Fisher information (over ``vec W``, class-major)

    I(x) = (diag p - p pᵀ) ⊗ h hᵀ = Vₓᵀ Vₓ,   Vₓ = Lₓ ⊗ hᵀ,   Lₓ = diag(√p) (Id - 1 pᵀ)  [C, C]

(``Lₓᵀ Lₓ = diag p - p pᵀ`` because ``Σ p = 1``), a rank-C matrix of size ``d = C·D``. BAIT picks
the batch B that minimises ``tr(M_B⁻¹ F)``: ``M_B = λ Id + Σ_{x ∈ L ∪ B} I(x)`` is the information
of the labeled set L and the batch, and ``F`` the mean Fisher of the unlabeled pool; the trace
bounds the expected error of the maximum-likelihood last layer on the pool. It oversamples
greedily (2k forward steps, each the candidate with the largest decrease of the trace), then
prunes greedily back to k (each step removes the chosen point whose removal increases the trace
least).

The low-rank algebra that makes it feasible at pool scale. With ``A = M⁻¹`` and ``K = A F A``, a
point's gain is ``tr((Id + Vₓ A Vₓᵀ)⁻¹ Vₓ K Vₓᵀ)`` and its removal cost
``tr((Id - Vₓ A Vₓᵀ)⁻¹ Vₓ K Vₓᵀ)``; both need only the ``[C, C]`` blocks
``Qᴬₓ[a, b] = hᵀ A_ab h`` and ``Qᴷₓ[a, b] = hᵀ K_ab h`` of every pool point (``A_ab`` the
``[D, D]`` block of classes a, b), since ``Vₓ A Vₓᵀ = Lₓ Qᴬₓ Lₓᵀ``. Adding or removing a point is
a rank-C Woodbury update of A and K, and the blocks of all N points follow it in
``O(N C² D)`` per step, from ``hᵀ A_ab h*`` of the point h* that moved — instead of the
``O(N C² D²)`` of recomputing them. Memory: ``O(N (C² + D) + (C D)²)``; no ``N x N`` matrix.

Our reading where the material we had was silent: M sums the labeled points' Fisher (it is the
information of the data the next model trains on; λ Id keeps it invertible before anything is
labeled), ``p`` is the mean prediction over MC samples or ensemble members, and F averages the
candidates (the unlabeled pool).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dal_jax.acquisition import _diversity
from dal_jax.acquisition import _scores


def fisher_factors(p: jax.Array) -> jax.Array:
  """``[N, C, C]`` ``L = diag(√p) (Id - 1 pᵀ)``, so that ``Lᵀ L = diag p - p pᵀ``."""
  c = p.shape[-1]
  return jnp.sqrt(p)[..., :, None] * (jnp.eye(c) - p[..., None, :])


def _blocks(h, mat, c):
  """``[n, C, C]`` ``hᵀ mat_ab h`` for every row of ``h [n, D]`` (``mat [C D, C D]``)."""
  d = h.shape[1]
  m4 = mat.reshape(c, d, c, d)
  t = jnp.einsum("nd,adbe->nabe", h, m4)
  return jnp.einsum("nabe,ne->nab", t, h)


def _chunks(x, chunk):
  """``x [N, ...]`` zero-padded and reshaped to ``[ceil(N / chunk), chunk, ...]``."""
  pad = -x.shape[0] % chunk
  x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  return x.reshape(-1, chunk, *x.shape[1:])


def _pool_fisher(p, h, weights, chunk):
  """``Σ_x w_x I(x)`` as a ``[C D, C D]`` matrix, accumulated chunk by chunk in a scan (one
  chunk's temporaries alive at a time; padded rows have weight 0)."""
  d = h.shape[1]
  c = p.shape[1]

  def add(total, blk):
    pp, hh, ww = blk
    sigma = (jax.vmap(jnp.diag)(pp) - pp[:, :, None] * pp[:, None, :]) * ww[:, None, None]
    # Σ_n σ_n[a, b] h_n h_nᵀ as one [C C D, n] x [n, D] product.
    scaled = (sigma[:, :, :, None] * hh[:, None, None, :]).reshape(hh.shape[0], c * c * d)
    return total + jnp.transpose((scaled.T @ hh).reshape(c, c, d, d), (0, 2, 1, 3)), None

  total, _ = jax.lax.scan(add, jnp.zeros((c, d, c, d), jnp.float32),
                          (_chunks(p, chunk), _chunks(h, chunk), _chunks(weights, chunk)))
  return total.reshape(c * d, c * d)


def _all_blocks(h, mat, c, chunk):
  """:func:`_blocks` of every row, chunk by chunk (``lax.map``: one chunk's ``[chunk, C, C, D]``
  temporary at a time)."""
  n = h.shape[0]
  return jax.lax.map(lambda hc: _blocks(hc, mat, c), _chunks(h, chunk)).reshape(-1, c, c)[:n]


def _bmm_t(x, y):
  """``x @ yᵀ`` for batches of small matrices ``[N, C, C']`` (a batched dot: a broadcast-and-sum
  is faster on CPU but materialises ``[N, C, C, C']``, O(N C³) memory)."""
  return jnp.einsum("nar,nbr->nab", x, y)


def _spd_solve_trace(a, b):
  """``tr(a⁻¹ b)`` for batches of symmetric positive-definite ``a`` by Gauss–Jordan elimination
  without pivoting (stable for SPD matrices), unrolled over the C columns: elementwise work XLA
  fuses, instead of a batched LU."""
  c = a.shape[-1]
  aug = jnp.concatenate([a, b], axis=-1)
  for i in range(c):
    row = aug[:, i, :] / aug[:, i, i:i + 1]
    aug = (aug - aug[:, :, i:i + 1] * row[:, None, :]).at[:, i, :].set(row)
  return jnp.trace(aug[:, :, c:], axis1=-2, axis2=-1)


def _trace_change(sign, lf, qa, qk):
  """``tr((Id + sign · L Qᴬ Lᵀ)⁻¹ L Qᴷ Lᵀ)`` per row: the decrease of ``tr(M⁻¹ F)`` when the
  point is added (sign +1), its increase when removed (sign -1). ``Id + sign · L Qᴬ Lᵀ`` is
  positive definite in both cases (removal: M minus a point's information is still ⪰ λ Id)."""
  g = _bmm_t(_bmm_t(lf, jnp.swapaxes(qa, 1, 2)), lf)
  hk = _bmm_t(_bmm_t(lf, jnp.swapaxes(qk, 1, 2)), lf)
  return _spd_solve_trace(jnp.eye(g.shape[-1]) + sign * g, hk)


@functools.partial(jax.jit, static_argnames=("k", "oversample", "chunk"))
def _bait_loop(p, h, candidates, labeled, lam, *, k: int, oversample: int, chunk: int):
  d = h.shape[1]
  c = p.shape[1]
  cand = candidates.astype(jnp.float32)
  lf = fisher_factors(p)  # [N, C, C]
  f = _pool_fisher(p, h, cand / jnp.maximum(jnp.sum(cand), 1.0), chunk)
  m0 = lam * jnp.eye(c * d) + _pool_fisher(p, h, labeled.astype(jnp.float32), chunk)
  a = jnp.linalg.inv(m0)
  a = 0.5 * (a + a.T)
  kmat = a @ f @ a
  qa = _all_blocks(h, a, c, chunk)
  qk = _all_blocks(h, kmat, c, chunk)

  def update(sign, j, a, kmat, qa, qk):
    """M ← M + sign · I(x_j): rank-C Woodbury updates of A, K and every row's blocks."""
    lj, hj = lf[j], h[j]
    g = lj @ qa[j] @ lj.T
    hk = lj @ qk[j] @ lj.T
    w = jnp.linalg.inv(sign * jnp.eye(c) + g)
    w = 0.5 * (w + w.T)
    x = w @ hk @ w
    ya = a.reshape(c, d, c, d) @ hj  # [C, D, C]: A_ab h_j, indexed [a, :, b]
    yk = kmat.reshape(c, d, c, d) @ hj
    u = jnp.einsum("adb,rb->adr", ya, lj).reshape(c * d, c)  # A Vⱼᵀ
    r = jnp.einsum("adb,rb->adr", yk, lj).reshape(c * d, c)  # K Vⱼᵀ
    za = jnp.einsum("nd,adr->nar", h, u.reshape(c, d, c))  # [N, C, C]: rows of hᵀ U_a
    zk = jnp.einsum("nd,adr->nar", h, r.reshape(c, d, c))
    # K' = K - U W Rᵀ - R W Uᵀ + U X Uᵀ = K + [U R] mix [U R]ᵀ, and the blocks likewise (one
    # batched product instead of three: XLA fuses several of them into one slow loop nest).
    mix = jnp.block([[x, -w], [-w, jnp.zeros_like(w)]])
    zz = jnp.concatenate([za, zk], axis=-1)  # [N, C, 2C]
    qa = qa - _bmm_t(za @ w, za)
    qk = qk + _bmm_t(zz @ mix, zz)
    ur = jnp.concatenate([u, r], axis=-1)  # [C D, 2C]
    a = a - (u @ w) @ u.T
    kmat = kmat + (ur @ mix) @ ur.T
    return a, kmat, qa, qk

  def forward(i, carry):
    a, kmat, qa, qk, free, chosen = carry
    gain = _trace_change(1.0, lf, qa, qk)
    j = jnp.argmax(jnp.where(free, gain, -jnp.inf))
    a, kmat, qa, qk = update(1.0, j, a, kmat, qa, qk)
    return a, kmat, qa, qk, free.at[j].set(False), chosen.at[i].set(j)

  chosen = jnp.zeros(oversample, jnp.int32)
  a, kmat, qa, qk, _, chosen = jax.lax.fori_loop(
      0, oversample, forward, (a, kmat, qa, qk, candidates, chosen))

  def backward(_, carry):
    a, kmat, qa, qk, keep = carry
    cost = _trace_change(-1.0, lf[chosen], qa[chosen], qk[chosen])
    t = jnp.argmin(jnp.where(keep, cost, jnp.inf))
    a, kmat, qa, qk = update(-1.0, chosen[t], a, kmat, qa, qk)
    return a, kmat, qa, qk, keep.at[t].set(False)

  keep = jnp.ones(oversample, bool)
  *_, keep = jax.lax.fori_loop(0, oversample - k, backward, (a, kmat, qa, qk, keep))
  order = jnp.argsort(~keep, stable=True)[:k]  # the kept points, in the order chosen
  return chosen[order]


def bait(log_probs: ArrayLike, pre_logits: ArrayLike, k: int, *, key: jax.Array,
         where: ArrayLike | None = None, lam: float = 1.0, oversample: float = 2.0,
         chunk_size: int = 512) -> jax.Array:
  """BAIT (Ash et al. 2021): greedy forward-backward selection minimising ``tr(M⁻¹ F)`` on the
  last layer's Fisher information, with rank-C updates (module docstring).

  Args:
    log_probs: ``[S, N, C]``; the mean prediction ``p`` over the S samples is used.
    pre_logits: ``[N, D]`` the last layer's inputs h.
    k: batch size.
    key: unused (BAIT is deterministic; kept for the batch-method signature).
    where: ``[N]`` candidate mask; rows outside it are the labeled set, whose Fisher starts M
      (identical labeled rows count once: :func:`dal_jax.acquisition._diversity.distinct_rows`).
    lam: λ > 0, the ridge ``λ Id`` in M.
    oversample: the forward pass picks ``ceil(oversample · k)`` points (at most the number of
      candidates; the paper's 2), then the backward pass removes points down to k.
    chunk_size: pool rows per block when the blocks are first computed.

  Returns:
    ``[k]`` distinct candidate indices.
  """
  del key
  log_probs, h, candidates, k = _diversity.item_batch_inputs("bait", log_probs, k, where,
                                                             pre_logits)
  lam = _diversity._finite_at_least(lam, 0.0, "bait's lam")
  if lam == 0.0:
    raise ValueError("bait's lam must be > 0 (λ Id keeps the information matrix invertible)")
  over = _diversity._finite_at_least(oversample, 1.0, "bait's oversample")
  chunk = _scores.count(chunk_size, "chunk_size")
  n_cand = int(jnp.sum(candidates))
  total = min(n_cand, max(k, int(np.ceil(over * k))))
  p = jnp.exp(_scores.mean_log_probs(log_probs))
  labeled = _diversity.distinct_rows(jnp.concatenate([h, p], axis=1), ~candidates)
  return _bait_loop(p, h, candidates, labeled, jnp.float32(lam), k=k, oversample=total,
                    chunk=chunk)
