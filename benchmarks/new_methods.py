r"""Time and peak memory of the newer acquisition methods at two pool sizes (issue 23's rows).

  python -m benchmarks.new_methods --out=benchmarks/results/new_methods.json

Each (method, N) runs in a fresh process (its own peak RSS): random log-probabilities
``[S, N, C]`` (the scores' cost does not depend on the values), one warm-up selection that
compiles, then the best of ``--repeats`` timed selections of k points. Methods so far: EPIG with
100 target inputs drawn from the pool; DropQuery-style selection (inconsistency under the S
dropout samples, then k-means on ``--dim``-dimensional random pre-logits of the inconsistent
candidates); MaxHerding-style kernel herding on ``--dim``-dimensional random embeddings with 500
target points; BAIT (2k forward and k backward rank-C steps on the Fisher of a ``--dim`` x C last
layer); ACS-FW (Frank-Wolfe on the S-sample projections until the support holds k points);
ALFA-Mix (head fit, mixing with C anchors, k-means among the flips; its log-probs are a random
linear head's on the embeddings, which the method requires). BAIT and ALFA-Mix get a
labeled block: the last 1,000 rows are not candidates (their Fisher starts BAIT's information
matrix, and they are ALFA-Mix's anchors).
"""

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from benchmarks import _common
from dal_jax import acquisition

_OUT = flags.DEFINE_string("out", "benchmarks/results/new_methods.json", "JSON output")
_SIZES = flags.DEFINE_list("pool_sizes", ["10000", "50000"], "pool sizes N")
_METHODS = flags.DEFINE_list("methods", ["epig", "dropquery", "maxherding", "bait", "acs_fw",
                                          "alfa_mix"],
                            "registered acquisitions to time")
_DIM = flags.DEFINE_integer("dim", 128, "pre-logits dimension D (methods that read them)")
_SAMPLES = flags.DEFINE_integer("mc_samples", 20, "samples S")
_CLASSES = flags.DEFINE_integer("classes", 10, "classes C")
_K = flags.DEFINE_integer("k", 100, "batch size")
_REPEATS = flags.DEFINE_integer("repeats", 2, "timed repetitions (best is reported)")
_OPTIONS = {"epig": {"num_targets": 100}}
_LABELED = 1000


def one_row(method: str, n: int) -> dict:
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(_SAMPLES.value, n, _CLASSES.value)).astype(np.float32) * 2
  log_probs = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
  where = jnp.arange(n) < n - _LABELED
  acq = acquisition.get_acquisition(method, **_OPTIONS.get(method, {}))
  state = acq.init(jax.random.key(0), None)
  outputs = {"log_probs": log_probs}
  if acq.needs.pre_logits or acq.needs.embeddings:
    emb = jnp.asarray(rng.normal(size=(n, _DIM.value)), jnp.float32)
    outputs.update(pre_logits=emb, embeddings=emb)
  if method == "alfa_mix":  # its input contract: the log-probs of a (dropout) linear head
    w = rng.normal(size=(_DIM.value, _CLASSES.value)).astype(np.float32) / np.sqrt(_DIM.value)
    noise = rng.normal(size=(_SAMPLES.value, 1, _CLASSES.value)).astype(np.float32) * 0.1
    outputs["log_probs"] = jax.nn.log_softmax(3.0 * (emb @ w)[None] + noise, axis=-1)

  def select(seed):
    indices, _ = acq.select(state, outputs, key=jax.random.key(seed), k=_K.value, where=where)
    return jax.block_until_ready(indices)

  select(0)
  times = []
  for r in range(_REPEATS.value):
    t0 = time.perf_counter()
    select(r + 1)
    times.append(time.perf_counter() - t0)
  return {"method": method, "options": _OPTIONS.get(method, {}), "pool_size": n,
          "mc_samples": _SAMPLES.value, "classes": _CLASSES.value, "k": _K.value,
          "seconds": min(times), "peak_rss_mib": _common.peak_rss_mib(),
          "log_probs_mib": log_probs.size * 4 / 2**20, "labeled_rows": _LABELED,
          "embedding_dim": _DIM.value if acq.needs.pre_logits or acq.needs.embeddings else None}


def main(argv):
  del argv
  if os.environ.get("DAL_JAX_BENCH_ROW"):
    method, n = os.environ["DAL_JAX_BENCH_ROW"].split(":")
    print(json.dumps(one_row(method, int(n))))
    return
  rows = []
  for method in _METHODS.value:
    rows += _common.rows_per_size("benchmarks.new_methods", "DAL_JAX_BENCH_ROW",
                                  [f"{method}:{n}" for n in _SIZES.value],
                                  [a for a in sys.argv[1:] if not a.startswith("--out")])
  _common.write_result(_OUT.value, {**_common.machine(), "command": " ".join(
      ["python -m benchmarks.new_methods", *sys.argv[1:]]), "rows": rows})


if __name__ == "__main__":
  app.run(main)
