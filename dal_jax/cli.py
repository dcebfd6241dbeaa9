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
from dal_jax import parallel

IMPORT = flags.DEFINE_multi_string(
    "import", [], "module to import before the run, e.g. one that registers your own "
    "acquisition or method (repeatable)")
DEBUG = flags.DEFINE_bool("debug", False, "show the full traceback of an error")
RESUME = _commandline.RESUME
COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "a run over several processes: host:port of process 0 "
    "(default: $JAX_COORDINATOR_ADDRESS, or detected on Cloud TPU / SLURM / Open MPI); run the "
    "same command in every process with --config.distributed=True")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                     "processes of the run (default: $JAX_NUM_PROCESSES)")
PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                  "this process's id in [0, num_processes) (default: "
                                  "$JAX_PROCESS_ID)")

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
  started = []

  def run_main(argv):
    started.append(True)
    main(argv)

  try:
    app.run(run_main)
  except (AttributeError, KeyError) as e:
    if started:  # not a flag: an error of the run itself
      raise
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
  for flag, env in ((COORDINATOR, parallel.ENV_ADDRESS), (NUM_PROCESSES, parallel.ENV_COUNT),
                    (PROCESS_ID, parallel.ENV_ID)):
    if flag.value is not None:
      os.environ[env] = str(flag.value)
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
