"""EPIG against baal's implementation on the same inputs.

Not part of the test suite (it installs another library and PyTorch). It

1. installs ``baal`` from PyPI into its own virtual environment (``--venv``; reused when it
   exists; baal 2.1.0 pulls PyTorch),
2. draws fresh random MC-dropout-like predictions: ``[S, N, C]`` candidate and ``[S, M, C]``
   target log-probabilities (``--trials`` draws, logits of several scales so both confident and
   uncertain predictions occur),
3. scores them with ``dal_jax.acquisition.epig`` here and with ``baal.active.heuristics.EPIG``'s
   ``compute_score`` in the virtual environment (``[N, C, S]`` probabilities, its layout),
4. prints one JSON line: the versions, the largest absolute and relative differences, and
   whether both rank the same top 10 candidates; exit status 0 when the largest absolute
   difference is below ``--tolerance`` (float32 here, float32 torch there).

Usage::

  python experiments/baal_epig_check.py [--venv /tmp/dal_jax_baal]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BAAL_SIDE = r"""
import sys, numpy as np, baal
from baal.active.heuristics import EPIG
data = np.load(sys.argv[1])
out = {}
for key in data.files:
  if key.startswith("pool_"):
    t = key[len("pool_"):]
    pool = np.exp(data[key]).transpose(1, 2, 0)        # [N, C, S]
    targ = np.exp(data["targ_" + t]).transpose(1, 2, 0)
    out[t] = EPIG().compute_score(pool, targ)
np.savez(sys.argv[2], **out)
from importlib.metadata import version
print(version("baal"), version("torch"))
"""


def ensure_venv(venv: str) -> None:
  if not os.path.exists(os.path.join(venv, "bin", "python")):
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
  if subprocess.run([os.path.join(venv, "bin", "python"), "-c", "import baal"],
                    capture_output=True).returncode:
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "baal==2.1.0"],
                   check=True)


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "dal_jax_baal"))
  ap.add_argument("--trials", type=int, default=5)
  ap.add_argument("--tolerance", type=float, default=1e-4)
  args = ap.parse_args()
  ensure_venv(args.venv)
  import jax
  import jax.numpy as jnp
  from dal_jax import acquisition

  rng = np.random.default_rng(2023)
  inputs, ours = {}, {}
  for t in range(args.trials):
    s, n, m, c = 20, 400, 64, int(rng.integers(2, 11))
    scale = float(rng.uniform(0.5, 4.0))
    pool = np.asarray(jax.nn.log_softmax(jnp.asarray(rng.normal(size=(s, n, c)) * scale,
                                                     jnp.float32)))
    targ = np.asarray(jax.nn.log_softmax(jnp.asarray(rng.normal(size=(s, m, c)) * scale,
                                                     jnp.float32)))
    inputs[f"pool_{t}"], inputs[f"targ_{t}"] = pool, targ
    ours[str(t)] = np.asarray(acquisition.epig(jnp.asarray(pool), jnp.asarray(targ)))
  with tempfile.TemporaryDirectory() as tmp:
    src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
    np.savez(src, **inputs)
    done = subprocess.run([os.path.join(args.venv, "bin", "python"), "-c", BAAL_SIDE, src, dst],
                          capture_output=True, text=True)
    if done.returncode:
      print(json.dumps({"ok": False, "error": done.stderr.strip().splitlines()[-1:]}))
      return 1
    theirs = dict(np.load(dst))
  abs_diff = max(float(np.max(np.abs(ours[t] - theirs[t]))) for t in ours)
  rel_diff = max(float(np.max(np.abs(ours[t] - theirs[t]) / np.maximum(np.abs(theirs[t]), 1e-6)))
                 for t in ours)
  same_top = all(set(np.argsort(-ours[t])[:10]) == set(np.argsort(-theirs[t])[:10]) for t in ours)
  ok = abs_diff < args.tolerance
  import dal_jax
  baal_version, torch_version = done.stdout.split()
  print(json.dumps({"ok": ok, "baal": baal_version, "torch": torch_version, "jax": jax.__version__,
                    "dal_jax": getattr(dal_jax, "__version__", "main"), "trials": args.trials,
                    "max_abs_diff": abs_diff, "max_rel_diff": rel_diff,
                    "same_top10": same_top,
                    "score_range": [float(min(v.min() for v in ours.values())),
                                    float(max(v.max() for v in ours.values()))]}))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
