"""Ctrl-C for command-line tools: one line and exit status 130, at once.

Raising ``KeyboardInterrupt`` into a process whose JAX, XLA or orbax threads are running lets
the interpreter shut down under them (seen: segmentation faults, orbax finalize-thread
tracebacks). Every dal_jax command keeps its state so that a kill at any moment is safe (a
project commits each command in one transaction; a run checkpoints every round), so Ctrl-C
does what a kill does: it prints its line and leaves with ``os._exit``.
"""

from __future__ import annotations

import os
import signal


def exit_on_ctrl_c(message: str) -> None:
  """Makes SIGINT print ``message`` on stderr and end the process with status 130."""
  data = ("\n" + message + "\n").encode()

  def handler(signum, frame):
    del signum, frame
    try:
      os.write(2, data)
    finally:
      os._exit(130)

  signal.signal(signal.SIGINT, handler)
