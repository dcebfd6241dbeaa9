"""What the benchmark scripts share: the machine's description, peak memory, a warm-up pool
prefix, and writing the JSON result."""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile


def machine() -> dict:
  """The backend, core count, architecture and JAX version of this machine."""
  import jax

  return {"backend": jax.default_backend(), "cpu_count": os.cpu_count(),
          "machine": platform.machine(), "jax": jax.__version__}


def peak_rss_mib() -> float:
  """This process's peak resident memory in MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(path: str, result: dict) -> None:
  """Writes ``result`` as indented JSON to ``path`` (making its folder) and says so."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {path}")


class FirstChunk:
  """The first ``n`` items of a pool on disk (``len`` and ``chunks`` as
  ``dal_jax.streaming.stream_scores`` reads them): a warm-up that compiles the chunk program."""

  def __init__(self, pool, n: int):
    self.pool, self.n = pool, min(n, len(pool))

  def __len__(self) -> int:
    return self.n

  def chunks(self, size: int):
    yield 0, self.pool.read(range(min(self.n, size)))


def rows_per_size(module: str, env_var: str, sizes, args: list[str]) -> list[dict]:
  """Runs ``python -m module *args`` once per size with ``env_var=size`` (a fresh process per
  size: its own peak RSS) and returns the JSON line each prints last."""
  rows = []
  for n in sizes:
    out = subprocess.run([sys.executable, "-m", module, *args],
                         env={**os.environ, env_var: str(n)}, capture_output=True, text=True,
                         check=True)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(json.dumps(rows[-1]), flush=True)
  return rows


def run_child(env_var: str, measure) -> bool:
  """In a child started by :func:`rows_per_size` (``env_var`` set to the size n): prints
  ``measure(n, a temporary folder)`` as JSON and returns True; in the parent returns False."""
  if not os.environ.get(env_var):
    return False
  with tempfile.TemporaryDirectory() as d:
    print(json.dumps(measure(int(os.environ[env_var]), d)), flush=True)
  return True
