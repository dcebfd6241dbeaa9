r"""MC-dropout BALD pool-scoring throughput and the per-round time split of a default run.

  python -m benchmarks.bald_throughput --out=benchmarks/results/bald_throughput.json

Scoring = chunked MC-dropout inference of the Gal et al. CNN (S samples, ``jax.vmap`` over
dropout keys) + BALD + top-k, timed after a warm-up call (compilation excluded), on random
weights and Fashion-MNIST-shaped inputs (throughput does not depend on the values). The round
split comes from the metrics of a real run (``--run_workdir``) or, when absent, from two rounds
of the default Fashion-MNIST config run into a temporary directory.
"""

import json
import os
import platform
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from absl import logging

from dal_jax import acquisition
from dal_jax import analysis
from dal_jax import models
from dal_jax import predict

_OUT = flags.DEFINE_string("out", "benchmarks/results/bald_throughput.json", "JSON output")
_POOL_SIZES = flags.DEFINE_list("pool_sizes", ["10000", "60000"], "pool sizes N")
_SAMPLES = flags.DEFINE_integer("mc_samples", 20, "MC-dropout samples S")
_CHUNKS = flags.DEFINE_list("chunk_sizes", ["512", "1024", "2048"], "chunk sizes to try")
_REPEATS = flags.DEFINE_integer("repeats", 2, "timed repetitions (best is reported)")
_RUN_WORKDIR = flags.DEFINE_string("run_workdir", "runs/fashion_mnist/bald",
                                   "workdir of a finished default run for the round split")


def score_pool(model, variables, x, key, s, chunk, k=100):
  out = predict.predict(model, variables, x, key=key, mc_samples=s, chunk_size=chunk)
  scores = acquisition.bald(out.log_probs)
  return acquisition.top_k(scores, k)


def throughput() -> list[dict]:
  model = models.get_model("gal_cnn", (28, 28, 1), 10)
  variables = model.init(jax.random.key(0), None)
  rows = []
  for n in map(int, _POOL_SIZES.value):
    x = jnp.asarray(np.random.default_rng(0).random((n, 28, 28, 1), np.float32))
    for chunk in map(int, _CHUNKS.value):
      jax.block_until_ready(score_pool(model, variables, x[:chunk], jax.random.key(1),
                                       _SAMPLES.value, chunk))  # compile
      times = []
      for r in range(_REPEATS.value):
        t = time.perf_counter()
        jax.block_until_ready(score_pool(model, variables, x, jax.random.key(r),
                                         _SAMPLES.value, chunk))
        times.append(time.perf_counter() - t)
      best = min(times)
      rows.append({"pool_size": n, "mc_samples": _SAMPLES.value, "chunk_size": chunk,
                   "seconds": best, "images_per_second": n / best})
      print(f"N={n:6d} S={_SAMPLES.value} chunk={chunk:5d}: {best:7.2f} s  "
            f"{n / best:8.0f} images/s", flush=True)
  return rows


def round_split() -> dict:
  workdir = _RUN_WORKDIR.value
  source = workdir
  if not os.path.isdir(workdir):
    from experiments.configs import fashion_mnist
    from dal_jax import experiment
    cfg = fashion_mnist.get_config()
    cfg.num_seeds = 1
    workdir = tempfile.mkdtemp()
    experiment.run_experiment(cfg, workdir, max_rounds=2)
    source = "fresh 2-round run of experiments/configs/fashion_mnist.py"
  runs = analysis.load_metrics(workdir)
  recs = [r for rs in runs.values() for r in rs if r["stop"] is None]
  recs = [r for r in recs if r["round"] > 0] or recs  # round 0 includes compilation
  split = {name: statistics.mean(r[f"time_{name}"] for r in recs)
           for name in ("train", "score", "select")}
  return {"source": source, "rounds_averaged": len(recs), "mean_seconds": split,
          "fraction": {k: v / sum(split.values()) for k, v in split.items()}}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  result = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
            "num_devices": jax.device_count(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "jax": jax.__version__,
            "throughput": throughput(), "round_split": round_split()}
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result["round_split"], indent=2))
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
