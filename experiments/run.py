r"""Runs one active learning experiment (all its seeds) in a workdir; rerun to resume.

  python -m experiments.run --config=experiments/configs/fashion_mnist.py \
      --config.acquisition=bald --workdir=runs/fmnist_bald

``--help`` lists every config field; ``--import=my.module`` registers your own acquisition or
method first.
"""

from dal_jax import _commandline

_commandline.entry_point(__name__)  # first: Ctrl-C during the imports below is one line

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dal_jax import cli
from dal_jax import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, cli.CONFIG_HELP, lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for results and checkpoints")
_MAX_ROUNDS = flags.DEFINE_integer("max_rounds", None,
                                   "stop after this many rounds per seed in this call (resumable)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # progress is printed per round; keep orbax quiet
  cli.guarded(lambda: experiment.run_experiment(_CONFIG.value, _WORKDIR.value,
                                                max_rounds=_MAX_ROUNDS.value))


if __name__ == "__main__":
  cli.run_app(main)
