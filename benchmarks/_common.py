"""What the benchmark scripts share: the machine's description, peak memory, a warm-up pool
prefix, and writing the JSON result."""

import json
import os
import platform
import resource


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
