r"""Parallel work: ensembles trained together, pool scoring over devices, seeds in parallel.

  python -m benchmarks.parallel --out=benchmarks/results/parallel.json

1. Ensemble training: M = 1, 2, 5, 10 members of the Gal CNN trained together
   (``learner.Learner.fit``) versus M trainings one after another (``training.fit``), the same
   number of steps each (early stopping off), Fashion-MNIST-shaped inputs.
2. Pool scoring (MC-dropout BALD inputs, S = 20) on 1 device versus the pool sharded over 8
   devices; on a CPU the 8 devices are simulated (``--xla_force_host_platform_device_count=8``) and
   share the same cores, so this checks overhead, not speed-up.
3. One active learning round for 1, 4, 8 seeds: ``loop.al_round`` on a stack of all seeds
   versus ``loop.al_round`` seed after seed.
"""

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from absl import logging

_OUT = flags.DEFINE_string("out", "benchmarks/results/parallel.json", "JSON output")
_STEPS = flags.DEFINE_integer("steps", 100, "training steps per model")
_MEMBERS = flags.DEFINE_list("members", ["1", "2", "5", "10"], "ensemble sizes")
_SEEDS = flags.DEFINE_list("seeds", ["1", "4", "8"], "parallel seed counts")
_POOL = flags.DEFINE_integer("pool", 10000, "pool size for scoring")
_SCORING_ONLY = flags.DEFINE_bool("scoring_only", False, "internal: only the scoring part")
_VMAP_ON_CPU = flags.DEFINE_multi_integer("vmap_on_cpu", [2, 5],
                                          "ensemble sizes also timed as one vmap-ed program on CPU")


def _data(n, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.random((n, 28, 28, 1), np.float32)),
          jnp.asarray(rng.integers(0, 10, n), jnp.int32))


def _timed(fn):
  jax.block_until_ready(fn())  # compile + warm up
  t = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t


def ensemble_training():
  from dal_jax import learner
  from dal_jax import models
  from dal_jax import training
  model = models.get_model("gal_cnn", (28, 28, 1), 10)
  x, y = _data(5000)
  labeled = np.arange(5000) < 500
  cfg = training.TrainConfig(max_steps=_STEPS.value, eval_every=_STEPS.value, batch_size=32)
  rows = []
  for m in map(int, _MEMBERS.value):
    keys = jax.random.split(jax.random.key(m), m)
    lrn = learner.Learner(model, cfg)
    t_par = _timed(lambda: lrn.fit(x, y, labeled, keys=keys).variables)
    t_one = _timed(lambda: training.fit(model, x, y, labeled, key=keys[0], config=cfg).variables)
    row = {"members": m, "parallel_seconds": t_par, "sequential_seconds": t_one * m,
           "one_member_seconds": t_one, "parallel_over_one_member": t_par / t_one,
           "vectorized": lrn.vectorized}
    if jax.default_backend() == "cpu" and m in _VMAP_ON_CPU.value:
      # For reference: the vmap-ed program on a CPU (auto mode runs members one by one there).
      row["vmap_on_cpu_seconds"] = _timed(lambda: learner.Learner(
          model, cfg, vectorize=True).fit(x, y, labeled, keys=keys).variables)
    rows.append(row)
    print(f"ensemble M={m:2d}: parallel {t_par:6.1f} s, sequential {t_one * m:6.1f} s "
          f"(one member {t_one:.1f} s)"
          + (f", vmap on CPU {row['vmap_on_cpu_seconds']:.1f} s"
             if "vmap_on_cpu_seconds" in row else ""), flush=True)
  return rows


def scoring():
  from dal_jax import learner
  from dal_jax import models
  from dal_jax import parallel
  model = models.get_model("gal_cnn", (28, 28, 1), 10)
  variables = learner.Learner(model).init(jax.random.split(jax.random.key(0), 1),
                                          jnp.zeros((1, 28, 28, 1)))
  x, _ = _data(_POOL.value)
  rows = []
  for mesh in (None, parallel.make_mesh()):
    lrn = learner.Learner(model, mesh=mesh, chunk_size=1024)
    t = _timed(lambda: lrn.predict(variables, x, keys=jax.random.key(1)[None],
                                   mc_samples=20).log_probs)
    n_dev = 1 if mesh is None else mesh.size
    rows.append({"devices": n_dev, "seconds": t, "images_per_second": _POOL.value / t})
    print(f"scoring on {n_dev} device(s): {_POOL.value / t:8.0f} images/s", flush=True)
  return rows


def parallel_seeds():
  from dal_jax import learner
  from dal_jax import loop
  from dal_jax import methods
  from dal_jax import models
  from dal_jax import training
  model = models.get_model("gal_cnn", (28, 28, 1), 10)
  x, y = _data(6000, seed=1)
  data = loop.LoopData(x_pool=x[:5000], x_val=x[5000:5500], y_val=y[5000:5500],
                       x_test=x[5500:], y_test=y[5500:])
  oracle = loop.simulated_oracle(np.asarray(y[:5000]), 10)
  method = methods.get_method("bald")
  lrn = learner.Learner(model, training.TrainConfig(max_steps=_STEPS.value,
                                                    eval_every=_STEPS.value, batch_size=32))
  rc = loop.RoundConfig(query_size=20, mc_samples=20, pool_subsample=2000, budget=10_000)

  def states(n):
    return [loop.init_loop_state(jax.random.key(s), 5000, np.arange(s * 50, s * 50 + 50),
                                 oracle.label(np.arange(s * 50, s * 50 + 50)))
            for s in range(n)]

  def run(stack):
    return loop.al_round(stack, method=method, learner=lrn, data=data, oracle=oracle,
                         config=rc)[0][0].labeled

  rows = []
  for n in map(int, _SEEDS.value):
    t_par = _timed(lambda: run(states(n)))
    t_seq = _timed(lambda: [run([s]) for s in states(n)][-1])
    rows.append({"seeds": n, "parallel_seconds": t_par, "sequential_seconds": t_seq,
                 "vectorized": lrn.vectorized})
    print(f"{n} seeds, one round: parallel {t_par:6.1f} s, sequential {t_seq:6.1f} s", flush=True)
  return rows


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if _SCORING_ONLY.value:
    print("RESULT " + json.dumps(scoring()), flush=True)
    return
  result = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(), "steps": _STEPS.value}
  result["ensemble_training"] = ensemble_training()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  if jax.default_backend() != "cpu":
    env.pop("XLA_FLAGS")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.parallel", "--scoring_only",
                         f"--pool={_POOL.value}"], env=env, capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  result["scoring"] = json.loads(lines[0][7:]) if lines else {"error": proc.stderr[-2000:]}
  print(proc.stdout.replace("RESULT ", "")[:2000])
  result["parallel_seeds"] = parallel_seeds()
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
