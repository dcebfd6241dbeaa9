"""Self-supervised embeddings of a pool: SimCLR (Chen, Kornblith, Norouzi & Hinton 2020) in JAX.

The low-budget methods (TypiClust, ProbCover; ``dal_jax.acquisition._typical``) select on
embeddings in which distance means similarity before any label exists. SimCLR learns them from the
pool alone: two random augmentations of every image of a batch are encoded, projected by a small
MLP, and trained to pick each other out among the batch (the NT-Xent loss, Chen et al. Eq. 1)::

  l(i, j) = -log exp(sim(z_i, z_j) / τ) / Σ_{k ≠ i} exp(sim(z_i, z_k) / τ)

averaged over both orders of every positive pair, with sim the cosine similarity. The encoder is
the task model itself (its penultimate layer, ``aux["pre_logits"]``), so the task model can start
from it (:func:`init_from_encoder`); embeddings are its deterministic pre-logits.

Everything is cached per pool: the key is the SHA-256 of the pool's bytes, the model and the
SimCLR options, so the same pool is embedded once (minutes on a 2-core CPU) and a changed pool or
option is trained again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dal_jax import predict as predict_lib
from dal_jax.models import Model


class SimCLRConfig(NamedTuple):
  """SimCLR options.

  Attributes:
    steps: optimisation steps.
    batch_size: images per step (two views each: 2·batch_size encoded per step).
    temperature: τ of NT-Xent.
    learning_rate: Adam learning rate.
    projection_dim: output size of the 2-layer projection head.
    shift: largest random translation in pixels (pad and crop).
    cutout: side of a random square set to the image mean (0: none; at most half the image).
    jitter: strength of random brightness and contrast changes.
    flip: random horizontal flips (off by default: they change digits).
    seed: PRNG seed.
  """

  steps: int = 600
  batch_size: int = 128
  temperature: float = 0.5
  learning_rate: float = 1e-3
  projection_dim: int = 64
  shift: int = 3
  cutout: int = 8
  jitter: float = 0.4
  flip: bool = False
  seed: int = 0


def check_simclr_config(config: SimCLRConfig) -> SimCLRConfig:
  for field, lo in (("steps", 1), ("batch_size", 2), ("projection_dim", 1), ("shift", 0),
                    ("cutout", 0), ("seed", 0)):
    v = getattr(config, field)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise ValueError(f"SimCLRConfig.{field} must be an integer >= {lo}, got {v!r}")
  for field in ("temperature", "learning_rate", "jitter"):
    v = getattr(config, field)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0 or (
        v == 0 and field != "jitter"):
      raise ValueError(f"SimCLRConfig.{field} must be a finite number "
                       f"{'>= 0' if field == 'jitter' else '> 0'}, got {v!r}")
  return config


def augment(key: jax.Array, x: jax.Array, config: SimCLRConfig) -> jax.Array:
  """A random view of every image of ``x`` ``[B, H, W, C]``: translation by up to ``shift``
  pixels, optional flip, brightness and contrast jitter around the image mean, cutout."""
  b, h, w, _ = x.shape
  k_shift, k_flip, k_con, k_bri, k_cut = jax.random.split(key, 5)
  s = config.shift
  if s:
    padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
    offsets = jax.random.randint(k_shift, (b, 2), 0, 2 * s + 1)
    x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0),
                                                      (h, w, img.shape[-1])))(padded, offsets)
  if config.flip:
    flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    x = jnp.where(flip, x[:, :, ::-1], x)
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  if config.jitter:
    contrast = jax.random.uniform(k_con, (b, 1, 1, 1), minval=1 - config.jitter,
                                  maxval=1 + config.jitter)
    std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
    bright = jax.random.uniform(k_bri, (b, 1, 1, 1), minval=-config.jitter,
                                maxval=config.jitter) * std
    x = (x - mean) * contrast + mean + bright
  if config.cutout:
    c = max(1, min(config.cutout, h // 2, w // 2))
    corner = jax.random.randint(k_cut, (b, 2), 0, jnp.array([h - c + 1, w - c + 1]))
    rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    inside = ((rows >= corner[:, 0, None, None]) & (rows < corner[:, 0, None, None] + c)
              & (cols >= corner[:, 1, None, None]) & (cols < corner[:, 1, None, None] + c))
    x = jnp.where(inside[..., None], mean, x)
  return x


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """NT-Xent (Chen et al. 2020, Eq. 1) of the positive pairs ``(z1[i], z2[i])`` ``[B, P]``,
  averaged over the 2B anchors."""
  z = jnp.concatenate([z1, z2])
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  n = z.shape[0]
  b = n // 2
  sim = z @ z.T / temperature
  sim = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, sim)
  positive = jnp.concatenate([jnp.arange(b, n), jnp.arange(0, b)])
  return jnp.mean(jax.nn.logsumexp(sim, axis=-1) - sim[jnp.arange(n), positive])


def _projection_init(key, dim_in, dim_out):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (dim_in, dim_in)) * jnp.sqrt(2.0 / dim_in),
          "b1": jnp.zeros(dim_in),
          "w2": jax.random.normal(k2, (dim_in, dim_out)) * jnp.sqrt(1.0 / dim_in),
          "b2": jnp.zeros(dim_out)}


def _project(p, h):
  return jax.nn.relu(h @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


@functools.lru_cache(maxsize=16)
def _make_step(model: Model, config: SimCLRConfig, tx):
  @jax.jit
  def step(params, opt_state, variables, x, key):
    k_idx, k1, k2, k_drop1, k_drop2 = jax.random.split(key, 5)
    idx = jax.random.choice(k_idx, x.shape[0], (config.batch_size,), replace=False)
    xb = x[idx]
    v1, v2 = augment(k1, xb, config), augment(k2, xb, config)

    def loss_fn(p):
      model_vars = {**variables, "params": p["model"]}
      h1 = model.apply(model_vars, v1, train=True, key=k_drop1)[1]["pre_logits"]
      h2 = model.apply(model_vars, v2, train=True, key=k_drop2)[1]["pre_logits"]
      return nt_xent(_project(p["head"], h1), _project(p["head"], h2), config.temperature)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def train_encoder(model: Model, x, config: SimCLRConfig = SimCLRConfig(), *,
                  progress: bool = True) -> tuple[Any, list[float]]:
  """SimCLR on ``x`` ``[N, H, W, C]``; returns ``(model variables, loss every 50 steps)``.

  Steps are dispatched from Python (a convolution inside a compiled loop runs several times
  slower on XLA:CPU; see ``training.train_steps``).
  """
  check_simclr_config(config)
  x = jnp.asarray(x, jnp.float32)
  if x.shape[0] < config.batch_size:
    raise ValueError(f"SimCLR needs at least batch_size={config.batch_size} pool images, got "
                     f"{x.shape[0]}")
  key = jax.random.key(config.seed)
  k_model, k_head, k_train = jax.random.split(key, 3)
  variables = model.init(k_model, x[:1])
  dim = model.apply(variables, x[:1], train=False)[1]["pre_logits"].shape[-1]
  params = {"model": variables["params"],
            "head": _projection_init(k_head, dim, config.projection_dim)}
  tx = optax.adam(config.learning_rate)
  opt_state = tx.init(params)
  step = _make_step(model, config, tx)
  losses, start = [], time.perf_counter()
  for t in range(config.steps):
    params, opt_state, loss = step(params, opt_state, variables, x, jax.random.fold_in(k_train, t))
    if t % 50 == 0 or t + 1 == config.steps:
      loss = float(loss)
      if not np.isfinite(loss):
        raise FloatingPointError(f"SimCLR diverged (loss={loss}) at step {t}; lower "
                                 "learning_rate")
      losses.append(loss)
      if progress:
        print(f"[simclr] step {t + 1:5d}/{config.steps}  loss {loss:.4f}  "
              f"{time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
  return {**variables, "params": params["model"]}, losses


def embed(model: Model, variables, x, *, chunk_size: int = 1024) -> np.ndarray:
  """``[N, D]`` deterministic pre-logits of the encoder, L2-normalised (SimCLR's similarity is
  the cosine)."""
  h = np.asarray(predict_lib.predict(model, variables, x, chunk_size=chunk_size,
                                     with_pre_logits=True).pre_logits, np.float32)
  return h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)


def cache_key(x, model_description: dict[str, Any], config: SimCLRConfig) -> str:
  """SHA-256 of the pool's bytes, the model's description and the SimCLR options."""
  h = hashlib.sha256()
  arr = np.ascontiguousarray(np.asarray(x, np.float32))
  h.update(repr(arr.shape).encode())
  h.update(arr.tobytes())
  h.update(json.dumps(model_description, sort_keys=True, default=str).encode())
  h.update(json.dumps(config._asdict(), sort_keys=True).encode())
  return h.hexdigest()[:24]


def pool_embeddings(model: Model, x, *, cache_dir: str, model_description: dict[str, Any],
                    config: SimCLRConfig = SimCLRConfig(), progress: bool = True):
  """``(embeddings [N, D], encoder variables)`` of a pool, from ``cache_dir`` when this pool,
  model and config were embedded before, else trained (:func:`train_encoder`) and stored."""
  key = cache_key(x, model_description, config)
  path = os.path.join(cache_dir, f"simclr_{key}.npz")
  template = model.init(jax.random.key(0), jnp.asarray(x[:1], jnp.float32))
  leaves, treedef = jax.tree.flatten(template)
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        stored = [f[f"leaf_{i}"] for i in range(len(leaves))]
        emb = f["embeddings"]
      if emb.shape[0] != len(x) or any(a.shape != b.shape for a, b in zip(stored, leaves)):
        raise ValueError("shapes differ")
      if progress:
        print(f"[simclr] embeddings from {path}", file=sys.stderr, flush=True)
      return emb, jax.tree.unflatten(treedef, [jnp.asarray(a) for a in stored])
    except (OSError, KeyError, ValueError) as e:
      print(f"[simclr] cache {path} unreadable ({e}); training again", file=sys.stderr)
  if progress:
    print(f"[simclr] learning self-supervised embeddings of {len(x)} pool images "
          f"({config.steps} steps of {config.batch_size} pairs); cached in {path}",
          file=sys.stderr, flush=True)
  variables, _ = train_encoder(model, x, config, progress=progress)
  emb = embed(model, variables, x)
  os.makedirs(cache_dir, exist_ok=True)
  tmp = path + f".tmp{os.getpid()}.npz"
  np.savez(tmp, embeddings=emb, **{f"leaf_{i}": np.asarray(v)
                                   for i, v in enumerate(jax.tree.leaves(variables))})
  os.replace(tmp, path)
  return emb, variables


def pca_embeddings(x, dim: int = 64) -> np.ndarray:
  """``[N, dim]`` L2-normalised principal components of the flattened pool (float64
  covariance): the unsupervised baseline the learned embeddings must beat (seconds, no
  training)."""
  flat = np.asarray(x, np.float64).reshape(len(x), -1)
  dim = min(int(dim), flat.shape[1])
  centred = flat - flat.mean(axis=0)
  _, vecs = np.linalg.eigh(centred.T @ centred)
  h = centred @ vecs[:, ::-1][:, :dim]
  return (h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def init_from_encoder(model: Model, encoder_variables, *, keep_fresh: str = "head") -> Model:
  """The model whose ``init`` starts from the self-supervised encoder: every parameter but those
  whose path contains ``keep_fresh`` (the classifier) comes from ``encoder_variables``."""

  def init(key, x):
    fresh = model.init(key, x)

    def pick(path, new, enc):
      return new if keep_fresh in jax.tree_util.keystr(path) else enc

    return jax.tree_util.tree_map_with_path(pick, fresh, encoder_variables)

  return Model(init=init, apply=model.apply)
