"""Evaluation metrics on log-probabilities ``[N, C]`` (accuracy, NLL, expected calibration error)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def accuracy(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of ``argmax_c log_probs == labels``."""
  return jnp.mean(jnp.argmax(log_probs, axis=-1) == labels)


def nll(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean negative log-likelihood of the labels (nats)."""
  return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def ece(log_probs: jax.Array, labels: jax.Array, *, num_bins: int = 15) -> jax.Array:
  """Expected calibration error with ``num_bins`` equal-width confidence bins (Guo et al. 2017):
  ``Σ_b |B_b|/N · |acc(B_b) - conf(B_b)|``."""
  conf = jnp.exp(jnp.max(log_probs, axis=-1))
  correct = (jnp.argmax(log_probs, axis=-1) == labels).astype(conf.dtype)
  bins = jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
  conf_sum = jnp.zeros(num_bins).at[bins].add(conf)
  acc_sum = jnp.zeros(num_bins).at[bins].add(correct)
  return jnp.sum(jnp.abs(acc_sum - conf_sum)) / conf.shape[0]


def classification_metrics(log_probs: jax.Array, labels) -> dict[str, float]:
  """Accuracy, NLL and ECE as Python floats, for ``log_probs`` ``[N, C]``."""
  labels = jnp.asarray(np.asarray(labels, np.int32))
  return {"accuracy": float(accuracy(log_probs, labels)), "nll": float(nll(log_probs, labels)),
          "ece": float(ece(log_probs, labels))}
