"""SimCLR embeddings: NT-Xent against NumPy, augmentations, the per-pool cache, starting the task
model from the encoder, and TypiClust / ProbCover end to end on digits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_jax import analysis
from dal_jax import experiment
from dal_jax import models
from dal_jax import selfsup
from tests.test_loop import tiny_config


def _nt_xent_np(z1, z2, tau):
  z = np.concatenate([z1, z2]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n, b = len(z), len(z1)
  total = 0.0
  for i in range(n):
    j = (i + b) % n
    others = [k for k in range(n) if k != i]
    logits = np.array([z[i] @ z[k] / tau for k in others])
    total += np.log(np.exp(logits).sum()) - z[i] @ z[j] / tau
  return total / n


def test_nt_xent_matches_numpy(rng):
  z1, z2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  got = selfsup.nt_xent(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), 0.5)
  assert float(got) == pytest.approx(_nt_xent_np(z1, z2, 0.5), rel=1e-5)
  # Identical views of orthogonal points: the positive dominates, the loss is small.
  eye = jnp.eye(4) * 1.0
  assert float(selfsup.nt_xent(eye, eye, 0.05)) < 1e-3


def test_augment_keeps_shape_and_varies(rng):
  x = jnp.asarray(rng.random((5, 12, 12, 1)), jnp.float32)
  cfg = selfsup.SimCLRConfig(shift=2, cutout=4, jitter=0.3, flip=True)
  a, b = selfsup.augment(jax.random.key(0), x, cfg), selfsup.augment(jax.random.key(1), x, cfg)
  assert a.shape == x.shape and not np.allclose(a, b)
  same = selfsup.augment(jax.random.key(0), x, selfsup.SimCLRConfig(shift=0, cutout=0,
                                                                     jitter=0.0))
  np.testing.assert_array_equal(same, x)
  with pytest.raises(ValueError, match="temperature"):
    selfsup.check_simclr_config(selfsup.SimCLRConfig(temperature=0.0))


def test_pool_embeddings_are_cached_per_pool(tmp_path, rng, capsys):
  x = rng.random((64, 8, 8, 1)).astype(np.float32)
  model = models.get_model("mlp", (8, 8, 1), 3, hidden=(16,))
  cfg = selfsup.SimCLRConfig(steps=3, batch_size=16)
  kw = dict(cache_dir=str(tmp_path), model_description={"m": "mlp16"}, config=cfg)
  emb, enc = selfsup.pool_embeddings(model, x, **kw)
  assert emb.shape == (64, 16)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
  again, enc2 = selfsup.pool_embeddings(model, x, **kw)
  assert "embeddings from" in capsys.readouterr().err
  np.testing.assert_array_equal(emb, again)
  jax.tree.map(np.testing.assert_array_equal, enc, enc2)
  x2 = x.copy()
  x2[0, 0, 0, 0] += 0.5  # one changed pixel: another key, trained again
  assert selfsup.cache_key(x2, {"m": "mlp16"}, cfg) != selfsup.cache_key(x, {"m": "mlp16"}, cfg)
  # The task model can start from the encoder: everything but the classifier is copied.
  started = selfsup.init_from_encoder(model, enc).init(jax.random.key(5), jnp.asarray(x[:1]))
  fresh = model.init(jax.random.key(5), jnp.asarray(x[:1]))
  flat_s = jax.tree_util.tree_flatten_with_path(started)[0]
  flat_e = dict(jax.tree_util.tree_flatten_with_path(enc)[0])
  flat_f = dict(jax.tree_util.tree_flatten_with_path(fresh)[0])
  for path, v in flat_s:
    want = flat_f[path] if "head" in jax.tree_util.keystr(path) else flat_e[path]
    np.testing.assert_array_equal(v, want)


@pytest.mark.parametrize("acquisition", ["typiclust", "probcover"])
def test_low_budget_acquisitions_end_to_end(tmp_path, acquisition):
  cfg = tiny_config(acquisition=acquisition, embeddings="simclr", selfsup_steps=3,
                    selfsup_init=True, data_dir=str(tmp_path / "data"))
  experiment.run_experiment(cfg, str(tmp_path / "run"))
  records = analysis.load_metrics(str(tmp_path / "run"))[cfg.seed]
  assert [r["num_labels"] for r in records] == [10, 15, 20, 25]
  chosen = [i for r in records for i in (r.get("selected") or [])]
  assert len(chosen) == len(set(chosen)) == 15
  assert (tmp_path / "data" / "dal_selfsup").is_dir()
  stored = json.loads((tmp_path / "run" / "config.json").read_text())
  assert stored["embeddings"] == "simclr" and stored["selfsup_init"]


def test_embeddings_are_required_by_typiclust(tmp_path):
  from dal_jax import config as config_lib
  with pytest.raises(ValueError, match="embeddings='simclr'"):
    config_lib.check(tiny_config(acquisition="typiclust"))


def test_pca_embeddings_match_numpy_svd(rng):
  x = rng.normal(size=(50, 4, 4, 1)) * np.linspace(0.1, 3, 16).reshape(1, 4, 4, 1)
  got = selfsup.pca_embeddings(x, dim=3)
  flat = x.reshape(50, -1) - x.reshape(50, -1).mean(0)
  u, sv, _ = np.linalg.svd(flat, full_matrices=False)
  want = u[:, :3] * sv[:3]
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-4)  # up to each axis' sign
