"""What dal_jax's command-line tools (``dal-jax``, ``experiments.*``) share: errors in one line,
and Ctrl-C as one line and exit status 130, at once.

Raising ``KeyboardInterrupt`` into a process whose JAX, XLA or orbax threads are running lets
the interpreter shut down under them (seen: segmentation faults, orbax finalize-thread
tracebacks). Every dal_jax command keeps its state so that a kill at any moment is safe (a
project commits each command in one transaction; a run checkpoints every round), so Ctrl-C
does what a kill does: it prints its line and leaves with ``os._exit``.
"""

from __future__ import annotations

import errno
import os
import signal


RESUME = "interrupted — run the same command to resume"


def entry_point(module_name: str) -> None:
  """Called first by an ``experiments`` command-line module: when it runs as the program,
  Ctrl-C from here on (the slow imports that follow included) is the resume line."""
  if module_name == "__main__":
    exit_on_ctrl_c(RESUME)


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


def one_line(e: BaseException) -> str:
  """An error's message as one line (a full disk named as such)."""
  if isinstance(e, OSError) and e.errno == errno.ENOSPC:
    where = f" writing {e.filename}" if e.filename else ""
    return f"no space left on the device{where}; free some space and run the command again"
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def quiet_library_logs() -> None:
  """Libraries' absl log lines (orbax logs every failed background write with its traceback)
  are hidden; the command's own error line says what failed (``--debug`` shows them)."""
  from absl import logging

  logging.set_verbosity(logging.FATAL)
