"""What every dal_jax command-line tool shares: ``--import`` of user modules, one-line errors,
and a resumable Ctrl-C."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Callable

from absl import flags

from dal_jax import _commandline
from dal_jax import config as config_lib

IMPORT = flags.DEFINE_multi_string(
    "import", [], "module to import before the run, e.g. one that registers your own "
    "acquisition or method (repeatable)")
DEBUG = flags.DEFINE_bool("debug", False, "show the full traceback of an error")
RESUME = "interrupted — run the same command to resume"

CONFIG_HELP = ("experiment config file (experiments/configs/*.py).\n" + config_lib.describe())


def import_modules(argv: list[str]) -> None:
  """Imports ``--import=module`` modules before flags are parsed, so what they register (and
  the config options of their methods) exists when the config file is read. From here on,
  Ctrl-C prints the resume line and exits at once (:mod:`dal_jax._signals`)."""
  _commandline.exit_on_ctrl_c(RESUME)
  for i, arg in enumerate(argv):
    name = None
    if arg.startswith("--import="):
      name = arg.split("=", 1)[1]
    elif arg == "--import" and i + 1 < len(argv):
      name = argv[i + 1]
    if name:
      try:
        importlib.import_module(name)
      except Exception as e:  # the user's module: any error is one line
        first = str(e).splitlines()[0] if str(e).strip() else ""
        sys.exit(f"error: --import={name}: {type(e).__name__}: {first}")


def run_app(main: Callable[[list[str]], None]) -> None:
  """``absl.app.run(main)`` after :func:`import_modules`; a ``--config.<field>`` override that
  names no field (ml_collections raises ``AttributeError`` / ``KeyError`` while the flags are
  parsed) is one line, not a traceback."""
  from absl import app

  import_modules(sys.argv)
  try:
    app.run(main)
  except (AttributeError, KeyError) as e:
    overrides = [a.split("=", 1)[0] for a in sys.argv[1:] if a.startswith("--config.")]
    name = str(e).strip("\"'")
    bad = [o for o in overrides if name in o.split(".")] or overrides
    print(f"error: {', '.join(bad[:1]) or 'a --config override'}: no config field {name!r}; "
          "--help lists the fields", file=sys.stderr)
    sys.exit(2)


def guarded(main: Callable[[], None]) -> None:
  """Runs ``main``: an error prints one line (the traceback with ``--debug``); Ctrl-C says how
  to resume (at once, as a kill would: every round is checkpointed and the same command resumes
  exactly; letting the interpreter shut down under running JAX, orbax or worker threads
  crashed)."""
  _commandline.exit_on_ctrl_c(RESUME)
  if not DEBUG.value:
    _commandline.quiet_library_logs()
  try:
    main()
  except KeyboardInterrupt:  # raised before the handler was installed
    print("\n" + RESUME, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(130)
  except (ValueError, TypeError, FileNotFoundError, FloatingPointError, OSError) as e:
    if DEBUG.value:
      traceback.print_exc()
    print(f"error: {_commandline.one_line(e)}", file=sys.stderr)
    sys.exit(2)
