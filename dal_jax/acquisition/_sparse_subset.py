"""ACS-FW: Bayesian batch selection as a sparse subset approximation (Pinsler, Gordon, Nalisnick &
Hernández-Lobato 2019, "Bayesian Batch Active Learning as Sparse Subset Approximation").

The batch is a weighted subset whose log-likelihood approximates the whole pool's: with
``L_n(θ) = E_{y ~ p(y | x_n, D)} [log p(y | x_n, θ)]`` (the expected log-likelihood of candidate n
under the current predictive), find sparse weights ``w ≥ 0`` with ``Σ_n w_n L_n ≈ L = Σ_n L_n``
in the norm ``‖f‖² = E_{θ ~ posterior}[f(θ)²]``. The norm is estimated on J posterior samples θ_j
(random projections): ``L̂_n = (1/√J) [L_n(θ_1), ..., L_n(θ_J)]``, so every inner product is a
J-vector dot product and the whole method is O(N·J) memory. Here the samples are the MC-dropout
samples or ensemble members of ``log_probs`` (``[J, N, C]``), and
``L_n(θ_j) = Σ_c p̄_nc log p_j(c | x_n)``.

Frank–Wolfe on the polytope ``{w ≥ 0, Σ_n σ_n w_n = σ}`` (σ_n = ‖L̂_n‖, σ = Σ σ_n; Campbell &
Broderick 2019's Hilbert coresets) from ``w = 0``: each step picks the vertex most aligned with
the residual, ``f = argmax_n ⟨L - L(w), L̂_n⟩ / σ_n``, and moves to it by the exact line search
``γ = ⟨(σ/σ_f) L̂_f - L(w), L - L(w)⟩ / ‖(σ/σ_f) L̂_f - L(w)‖²`` clipped to [0, 1],
``w ← (1 - γ) w + γ (σ/σ_f) e_f``. The batch is the support of w.

Our reading where the material we had was silent: Frank–Wolfe may pick a point again, so the
iteration runs until the support holds k points, at most ``max_iters`` steps; if it ends short,
the rest are the best-aligned candidates outside the support (the vertices the next steps would
consider), so the batch always has exactly k points. Candidates only: the labeled rows (outside
``where``) take no part in L.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dal_jax.acquisition import _diversity
from dal_jax.acquisition import _scores


def projections(log_probs: jax.Array) -> jax.Array:
  """``[N, J]`` ``L̂_n = (1/√J) [Σ_c p̄_nc log p_j(c | x_n)]_j`` from ``[J, N, C]`` log-probs."""
  p_bar = jnp.exp(_scores.mean_log_probs(log_probs))  # [N, C]
  ll = jnp.einsum("nc,jnc->nj", p_bar, log_probs)
  return ll / jnp.sqrt(log_probs.shape[0])


@functools.partial(jax.jit, static_argnames=("k", "max_iters"))
def _frank_wolfe(proj, candidates, *, k: int, max_iters: int):
  z = jnp.where(candidates[:, None], proj, 0.0)  # [N, J]
  sigma_n = jnp.linalg.norm(z, axis=1)
  usable = candidates & (sigma_n > 0)
  sigma = jnp.sum(sigma_n)
  target = jnp.sum(z, axis=0)  # L
  safe = jnp.where(usable, sigma_n, 1.0)

  def alignment(approx):
    return jnp.where(usable, (z @ (target - approx)) / safe, -jnp.inf)

  def cond(carry):
    it, w, _ = carry
    return (it < max_iters) & (jnp.sum(w > 0) < k)

  def step(carry):
    it, w, approx = carry
    f = jnp.argmax(alignment(approx))
    vertex = (sigma / safe[f]) * z[f]
    d = vertex - approx
    denom = jnp.dot(d, d)
    gamma = jnp.where(denom > 0, jnp.dot(d, target - approx) / jnp.where(denom > 0, denom, 1.0),
                      0.0)
    gamma = jnp.clip(gamma, 0.0, 1.0)
    w = (1.0 - gamma) * w
    w = w.at[f].add(gamma * sigma / safe[f])
    return it + 1, w, (1.0 - gamma) * approx + gamma * vertex

  w0 = jnp.zeros(z.shape[0], jnp.float32)
  iters, w, approx = jax.lax.while_loop(cond, step, (0, w0, jnp.zeros_like(target)))
  # The support first (largest weight first), then the best-aligned candidates outside it.
  support = w > 0
  m = jnp.sum(support)
  by_weight = jax.lax.top_k(jnp.where(support, w, -jnp.inf), k)[1]
  align = jnp.where(usable, alignment(approx), -1e30)
  by_alignment = jax.lax.top_k(jnp.where(candidates & ~support, align, -jnp.inf), k)[1]
  slots = jnp.arange(k)
  merged = jnp.concatenate([by_weight, by_alignment])
  valid = jnp.concatenate([slots < m, slots < k - m])
  return merged[jnp.argsort(~valid, stable=True)[:k]], w, iters


def acs_fw(log_probs: ArrayLike, k: int, *, key: jax.Array, where: ArrayLike | None = None,
           max_iters: int = 0) -> jax.Array:
  """ACS-FW (Pinsler et al. 2019): Frank–Wolfe sparse approximation of the pool's expected
  log-likelihood on random projections from the MC samples or ensemble members (module
  docstring).

  Args:
    log_probs: ``[J, N, C]``, J >= 2 posterior samples (MC-dropout samples, ensemble members).
    k: batch size.
    key: unused (the method is deterministic given the samples).
    where: ``[N]`` candidate mask.
    max_iters: the most Frank–Wolfe steps (0: ``20 · k``); the support is filled up to k
      afterwards if it is short.

  Returns:
    ``[k]`` distinct candidate indices.
  """
  del key
  log_probs, _, candidates, k = _diversity.item_batch_inputs("acs_fw", log_probs, k, where)
  if log_probs.shape[0] < 2:
    raise ValueError("acs_fw projects on posterior samples and needs J >= 2 of them (MC "
                     f"dropout samples or ensemble members), got {log_probs.shape[0]}")
  max_iters = _scores.count(max_iters, "max_iters", minimum=0) or 20 * k
  indices, _, _ = _frank_wolfe(projections(log_probs), candidates, k=k, max_iters=max_iters)
  return indices
