r"""Selection time and peak memory of BADGE, core-set and BatchBALD: dal_jax versus straightforward
full-matrix NumPy implementations of the same algorithms, each case in its own subprocess.

  python -m benchmarks.batch_selection --out=benchmarks/results/batch_selection.json

Cases (the issue's): BADGE N = 10k, 50k; C = 10; D = 128; k = 100, 1000. Core-set N = 50k,
D = 512, k = 1000 (1,000 labeled). BatchBALD N = 10k, S = 100, C = 10, b = 10, 100.

The NumPy baselines are what peer code does: BADGE materialises the N x (C·D) gradient matrix and
runs k-means++ on it; core-set builds the N x N distance matrix; BatchBALD forms the full
[N, M, C] joint per step. A baseline is skipped when its estimated memory exceeds ``--max_gb``.
Peak memory is the child's peak RSS minus its RSS after the inputs were built (``ru_maxrss``).
dal_jax times exclude compilation (one warm-up call on the same shapes).
"""

import json
import os
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

_OUT = flags.DEFINE_string("out", "benchmarks/results/batch_selection.json", "JSON output")
_MAX_GB = flags.DEFINE_float("max_gb", 12.0, "skip NumPy baselines needing more memory")
_CASE = flags.DEFINE_string("case", None, "internal: run one case (JSON) and print its result")
_ONLY = flags.DEFINE_list("only", [], "run only these methods (badge, coreset, batchbald)")

CASES = (
    [{"method": "badge", "n": n, "c": 10, "d": 128, "k": k} for n in (10_000, 50_000)
     for k in (100, 1000)]
    + [{"method": "coreset", "n": n, "d": 512, "k": 1000, "labeled": 1000}
       for n in (20_000, 50_000)]
    + [{"method": "batchbald", "n": 10_000, "s": 100, "c": 10, "k": b, "m": 1000}
       for b in (10, 100)])


def _rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _inputs(case):
  import numpy as np
  rng = np.random.default_rng(0)
  n = case["n"]
  if case["method"] == "badge":
    logits = rng.normal(size=(n, case["c"])) * 2
    lp = (logits - np.log(np.exp(logits).sum(1, keepdims=True)))[None].astype(np.float32)
    return lp, np.abs(rng.normal(size=(n, case["d"]))).astype(np.float32)
  if case["method"] == "coreset":
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, case["labeled"], replace=False)] = True
    return rng.normal(size=(n, case["d"])).astype(np.float32), labeled
  logits = rng.normal(size=(case["s"], n, case["c"])) * rng.uniform(0.5, 3, size=(1, n, 1))
  return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32), None


# ---- straightforward NumPy implementations (what peers ship) ----

def numpy_badge(lp, h, k, seed=0):
  import numpy as np
  rng = np.random.default_rng(seed)
  p = np.exp(lp[0])
  a = p - np.eye(p.shape[1], dtype=p.dtype)[p.argmax(1)]
  g = (a[:, :, None] * h[:, None, :]).reshape(len(h), -1)  # N x (C·D)
  sq = (g * g).sum(1)
  chosen = [int(np.argmax(sq))]
  min_d = np.maximum(sq + sq[chosen[0]] - 2 * g @ g[chosen[0]], 0)
  for _ in range(1, k):
    prob = min_d / min_d.sum()
    j = int(rng.choice(len(g), p=prob))
    chosen.append(j)
    min_d = np.minimum(min_d, np.maximum(sq + sq[j] - 2 * g @ g[j], 0))
  return chosen


def numpy_coreset(x, labeled, k):
  import numpy as np
  sq = (x * x).sum(1)
  n = len(x)
  dist = np.empty((n, n), np.float32)  # the full N x N matrix, filled by row blocks (one
  for s in range(0, n, 5000):          # 50k x 50k product segfaulted in the bundled OpenBLAS)
    blk = x[s:s + 5000] @ x.T
    blk *= -2
    blk += sq[s:s + 5000, None]
    blk += sq[None, :]
    dist[s:s + 5000] = blk
  min_d = dist[:, labeled].min(1)
  chosen = []
  for _ in range(k):
    j = int(np.argmax(np.where(labeled, -np.inf, min_d)))
    chosen.append(j)
    labeled = labeled.copy()
    labeled[j] = True
    min_d = np.minimum(min_d, dist[:, j])
  return chosen


def numpy_batchbald(lp, k, m, seed=0):
  import numpy as np
  rng = np.random.default_rng(seed)
  p = np.exp(lp)  # [S, N, C]
  s, n, c = p.shape
  cond = -(p * lp).sum(-1).mean(0)
  config = np.ones((s, 1), np.float32)
  chosen = []
  for step in range(k):
    joint = np.einsum("sm,snc->nmc", config, p, optimize=True) / s  # [N, M, C]
    if config.shape[1] * c <= 1000 and step < 3:
      ent = -(joint * np.log(np.maximum(joint, 1e-30))).sum((1, 2))
    else:
      pm = config.mean(0)
      ent = -((joint / pm[None, :, None]) * np.log(np.maximum(joint, 1e-30))).sum(2).mean(1)
    score = ent - cond
    score[chosen] = -np.inf
    j = int(np.argmax(score))
    chosen.append(j)
    if config.shape[1] * c * c <= 1000:
      config = (config[:, :, None] * p[:, j, None, :]).reshape(s, -1)
    else:
      w = (config[:, :, None] * p[:, j, None, :]).mean(0)  # [M, C]
      if config.shape[1] != m:
        flat = rng.choice(w.size, size=m, p=(w / w.sum()).ravel())
        config = config[:, flat // c] * p[:, j, flat % c]
      else:
        cidx = np.array([rng.choice(c, p=row / row.sum()) for row in w])
        config = config * p[:, j, cidx]
      config /= config.max(0, keepdims=True)  # rescale per configuration (ratios unchanged)
  return chosen


def _numpy_gb(case) -> float:
  if case["method"] == "badge":
    return case["n"] * case["c"] * case["d"] * 4 * 2 / 2**30
  if case["method"] == "coreset":
    return case["n"] ** 2 * 4 * 1.1 / 2**30
  return case["n"] * case["m"] * case["c"] * 4 * 3 / 2**30


def run_case(case):
  import jax
  import jax.numpy as jnp
  from dal_jax import acquisition as acq

  a, b = _inputs(case)
  k = case["k"]
  base = _rss_mb()
  if case["impl"] == "numpy":
    t = time.perf_counter()
    if case["method"] == "badge":
      out = numpy_badge(a, b, k)
    elif case["method"] == "coreset":
      out = numpy_coreset(a, b, k)
    else:
      out = numpy_batchbald(a, k, case["m"])
    seconds = time.perf_counter() - t
  else:
    key = jax.random.key(0)
    if case["method"] == "badge":
      fn = lambda: acq.badge(jnp.asarray(a), jnp.asarray(b), k, key=key)  # noqa: E731
    elif case["method"] == "coreset":
      fn = lambda: acq.coreset(jnp.asarray(a), k, where=jnp.asarray(~b), key=key)  # noqa: E731
    else:
      fn = lambda: acq.batchbald(jnp.asarray(a), k, key=key, num_samples=case["m"]).indices  # noqa: E731
    jax.block_until_ready(fn())  # compile
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    seconds = time.perf_counter() - t
  assert len(set(list(map(int, out)))) == k
  return {**case, "seconds": seconds, "peak_extra_mb": max(_peak_mb() - base, 0.0)}


def main(argv):
  del argv
  if _CASE.value:
    print("RESULT " + json.dumps(run_case(json.loads(_CASE.value))), flush=True)
    return
  rows = []
  for case in CASES:
    if _ONLY.value and case["method"] not in _ONLY.value:
      continue
    for impl in ("dal_jax", "numpy"):
      spec = {**case, "impl": impl}
      if impl == "numpy" and _numpy_gb(case) > _MAX_GB.value:
        rows.append({**spec, "skipped": f"needs ~{_numpy_gb(case):.1f} GB"})
        print(f"{spec}: skipped", flush=True)
        continue
      proc = subprocess.run([sys.executable, "-m", "benchmarks.batch_selection",
                             f"--case={json.dumps(spec)}"], capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": os.environ.get(
                                "JAX_PLATFORMS", "cpu")})
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if proc.returncode or not line:
        rows.append({**spec, "error": proc.stderr[-2000:]})
        print(f"{spec}: FAILED\n{proc.stderr[-2000:]}", flush=True)
        continue
      row = json.loads(line[0][7:])
      rows.append(row)
      print(f"{row['method']:9s} {impl:7s} N={row['n']:6d} k={row['k']:5d}: "
            f"{row['seconds']:8.2f} s  peak +{row['peak_extra_mb']:8.0f} MB", flush=True)
  for r in rows:
    if r.get("impl") == "dal_jax" and "seconds" in r:
      ref = [x for x in rows if x.get("impl") == "numpy" and "seconds" in x and
             all(x[f] == r[f] for f in ("method", "n", "k"))]
      if ref:
        r["speedup_vs_numpy"] = ref[0]["seconds"] / r["seconds"]
        r["memory_ratio_vs_numpy"] = ref[0]["peak_extra_mb"] / max(r["peak_extra_mb"], 1.0)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump({"cpu_count": os.cpu_count(), "rows": rows}, f, indent=2)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
