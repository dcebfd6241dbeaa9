"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (see test_parallel.py): compares
stacked training and sharded pool scoring on 8 simulated devices with 1 device. Prints JSON."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from dal_jax import acquisition
from dal_jax import learner as learner_lib
from dal_jax import models
from dal_jax import parallel
from dal_jax import training


def max_diff(a, b):
  return max(float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 256)
  x = (rng.normal(size=(3, 64))[y] * 2 + rng.normal(size=(256, 64))).reshape(256, 8, 8, 1)
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
  model = models.get_model("gal_cnn", (8, 8, 1), 3, filters=4, hidden=16)
  cfg = training.TrainConfig(max_steps=20, eval_every=10, patience=5, batch_size=16,
                             min_steps=0, min_epochs=0.0)
  labeled = np.arange(256) < 40
  mesh = parallel.make_mesh()
  out = {"devices": jax.device_count()}
  for m in (8, 2):
    keys = jax.random.split(jax.random.key(m), m)
    sharded = learner_lib.Learner(model, cfg, mesh=mesh).fit(x, y, labeled, keys=keys,
                                                              val=(x[200:], y[200:]))
    single = learner_lib.Learner(model, cfg, vectorize=True).fit(x, y, labeled, keys=keys,
                                                                 val=(x[200:], y[200:]))
    alone = training.fit(model, x, y, labeled, key=keys[1], config=cfg, val=(x[200:], y[200:]))
    out[f"layout_{m}"] = parallel.stacked_layout(mesh, m, cfg.batch_size)
    out[f"train_diff_sharded_vs_single_{m}"] = max_diff(sharded.variables, single.variables)
    out[f"train_diff_member1_vs_alone_{m}"] = max_diff(
        jax.tree.map(lambda a: a[1], sharded.variables), alone.variables)
    leaf = jax.tree.leaves(sharded.variables)[0]
    out[f"param_sharding_{m}"] = str(leaf.sharding.spec)
  variables = sharded.variables
  key = jax.random.key(3)
  keys = jnp.stack([key] * 2)
  lp_s = learner_lib.Learner(model, cfg, mesh=mesh, chunk_size=96).predict(
      variables, x, keys=keys, mc_samples=4).log_probs
  lp_1 = learner_lib.Learner(model, cfg, chunk_size=96).predict(
      variables, x, keys=keys, mc_samples=4).log_probs
  out["predict_diff"] = max_diff(lp_s, lp_1)
  where = jnp.asarray(~labeled)
  idx_s = acquisition.top_k(acquisition.bald(learner_lib.ensemble_log_probs(lp_s), where=where), 10)
  idx_1 = acquisition.top_k(acquisition.bald(learner_lib.ensemble_log_probs(lp_1), where=where), 10)
  out["topk_sharded"] = np.asarray(idx_s).tolist()
  out["topk_single"] = np.asarray(idx_1).tolist()
  # A pool on disk: every device's block is read for it alone (so each process of a run over
  # several reads only its devices' rows), with the values of the pool in memory.
  import tempfile
  from dal_jax import streaming

  class Counted(streaming.RecordPool):
    reads = []

    def read(self, indices):
      Counted.reads.append(len(np.asarray(indices).reshape(-1)))
      return super().read(indices)

  path = tempfile.mkdtemp() + "/pool"
  streaming.write_pool(path, [np.asarray(x)], shape=(8, 8, 1), dtype="float32")
  lp_d = learner_lib.Learner(model, cfg, mesh=mesh, chunk_size=96).predict(
      variables, Counted(path), keys=keys, mc_samples=4).log_probs
  out["disk_predict_diff"] = max_diff(lp_d, lp_s)
  out["disk_largest_read"] = max(Counted.reads)
  out["disk_rows_read"] = sum(Counted.reads)
  # The runner: one config field picks the device count; results do not depend on it.
  from dal_jax import experiment
  from tests.test_loop import tiny_config
  selections = {}
  for n_dev in (8, 1):
    cfg = tiny_config(acquisition="bald", ensemble_size=8, mc_samples=2, budget=20)
    cfg.num_devices = n_dev
    res = experiment.run_experiment(cfg, tempfile.mkdtemp())
    selections[n_dev] = [r["selected"] for r in res[cfg.seed]]
    out[f"runner_devices_{n_dev}"] = res[cfg.seed][0]["num_devices"]
  out["runner_same_selection"] = selections[8] == selections[1]
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main()
