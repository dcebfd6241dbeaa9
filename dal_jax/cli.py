"""What every dal_jax command-line tool shares: ``--import`` of user modules, one-line errors,
and a resumable Ctrl-C."""

from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
from typing import Callable

from absl import flags

from dal_jax import config as config_lib

IMPORT = flags.DEFINE_multi_string(
    "import", [], "module to import before the run, e.g. one that registers your own "
    "acquisition or method (repeatable)")
DEBUG = flags.DEFINE_bool("debug", False, "show the full traceback of an error")

CONFIG_HELP = ("experiment config file (experiments/configs/*.py).\n" + config_lib.describe())


def import_modules(argv: list[str]) -> None:
  """Imports ``--import=module`` modules before flags are parsed, so what they register (and
  the config options of their methods) exists when the config file is read."""
  for i, arg in enumerate(argv):
    name = None
    if arg.startswith("--import="):
      name = arg.split("=", 1)[1]
    elif arg == "--import" and i + 1 < len(argv):
      name = argv[i + 1]
    if name:
      try:
        importlib.import_module(name)
      except ImportError as e:
        sys.exit(f"error: --import={name}: {e}")


def guarded(main: Callable[[], None]) -> None:
  """Runs ``main``: an error prints one line (the traceback with ``--debug``); Ctrl-C says how
  to resume."""
  try:
    main()
  except KeyboardInterrupt:
    print("\ninterrupted — run the same command to resume", file=sys.stderr, flush=True)
    if any(t.name.startswith("dal-worker") and t.is_alive() for t in threading.enumerate()):
      # Runs still training in worker threads (config.workers) cannot be stopped, and the
      # interpreter's shutdown under them crashes: leave at once, as a kill would (every round is
      # checkpointed; the same command resumes exactly).
      sys.stdout.flush()
      os._exit(130)
    sys.exit(130)
  except (ValueError, TypeError, FileNotFoundError, FloatingPointError, OSError) as e:
    if DEBUG.value:
      traceback.print_exc()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
