r"""Runs several acquisitions with one config and compares them (plot + table).

The main job of the README:

  python -m experiments.compare --config=experiments/configs/fashion_mnist.py \
      --acquisitions=random,entropy,bald --workdir=runs/fashion_mnist

Each strategy runs in ``workdir/<acquisition>/`` (resumable; finished runs are not redone). The
comparison is written to ``workdir/comparison.png``, ``comparison.md`` and ``comparison.json``.
``--plot_only`` just redraws from existing results.
"""

from dal_jax import _commandline

_commandline.entry_point(__name__)  # first: Ctrl-C during the imports below is one line

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dal_jax import analysis
from dal_jax import cli
from dal_jax import config as config_lib
from dal_jax import experiment
from dal_jax import parallel
from dal_jax import tasks as tasks_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, cli.CONFIG_HELP, lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "parent directory of the strategies' workdirs")
_ACQUISITIONS = flags.DEFINE_list(
    "acquisitions", ["random", "entropy", "bald"],
    "strategies to compare: an acquisition name, or label:acquisition:field=value:... for a "
    "variant, e.g. ens_bald:bald:ensemble_size=5:mc_samples=0 or "
    "waal_train:waal:methods.waal.alpha=0.01")
_PLOT_ONLY = flags.DEFINE_bool("plot_only", False, "only redraw the comparison")
_SETTINGS = flags.DEFINE_list(
    "settings", [],
    "several protocols from one command: label:field=value:... per setting (e.g. "
    "n20k10:initial_size=20:query_size=10:budget=120,n50k50:initial_size=50:query_size=50:"
    "budget=300); each runs every strategy in workdir/<label>/, and workdir/settings.md gets "
    "every setting's table and the pairwise penalty matrix over all of them")
_STABILIZING = flags.DEFINE_list(
    "stabilizing_thresholds", [],
    "extra kappa thresholds at which to report where stabilizing predictions would have stopped "
    "(runs need --config.stabilizing_stop_set > 0; the config's threshold is always reported)")
flags.mark_flags_as_required(["config", "workdir"])


def parse_strategy(spec: str, config):
  """``name`` or ``label:acquisition:field=value:...`` -> (label, config for that strategy)."""
  parts = spec.split(":")
  cfg = config_lib.with_overrides(config, parts[2:], context=f"strategy {spec!r}")
  cfg.acquisition = parts[1] if len(parts) > 1 else parts[0]
  return parts[0], cfg


def title(config) -> str:
  """The protocol in a plot's title: dataset, model, initial set, k, budget, seeds."""
  head = f"{config.protocol}\n" if config.protocol else ""
  cold = f" ({config.cold_start})" if config.cold_start != "random" else ""
  return (f"{head}{config.dataset}: {config.model}, {config.initial_size} initial{cold} + "
          f"k={config.query_size} per round to {config.budget}, {config.num_seeds} seeds")


def compare(config, workdir: str, acquisitions, *, plot_only: bool = False,
            stabilizing_thresholds=(), return_results: bool = False):
  """Runs (unless ``plot_only``) and compares; returns the Markdown table (and the loaded
  ``{strategy: {seed: records}}`` with ``return_results``)."""
  strategies = [parse_strategy(spec, config) for spec in acquisitions]
  if not plot_only:  # every strategy's errors before any of them runs
    for _, cfg in strategies:
      config_lib.check(cfg)
      experiment.build_method(cfg)
  if not plot_only:
    splits = experiment.load_splits(strategies[0][1])
    concurrent = config.workers > 1 and len(strategies) > 1
    tasks = []
    for name, cfg in strategies:
      if concurrent:  # the strategies run side by side, each one's seeds in turn
        cfg = config_lib.with_overrides(cfg, ["workers=1"], context=f"strategy {name!r}")
      tasks.append(lambda cfg=cfg, sub=os.path.join(workdir, name): experiment.run_experiment(
          cfg, sub, splits=splits))
    experiment.run_concurrently(tasks, config.workers if concurrent else 1)
  results = {}
  for name, cfg in strategies:
    sub = os.path.join(workdir, name)
    seeds = range(config.seed, config.seed + config.num_seeds)
    results[name] = {s: r for s, r in analysis.load_metrics(sub).items() if s in seeds}
    if not results[name]:
      raise ValueError(f"{sub!r} holds none of the seeds {list(seeds)}")
  metric = tasks_lib.get_task(config.task).headline  # the curve: accuracy, mIoU, ...
  thresholds = tuple(sorted({float(config.stabilizing_threshold),
                             *(float(t) for t in stabilizing_thresholds)}))
  rows = analysis.summarize(results, target=config.report_accuracy,
                            stabilizing_window=config.stabilizing_window,
                            stabilizing_thresholds=thresholds,
                            count_from=(config.initial_size if config.report_counting == "acquired"
                                        else 0), metric=metric)
  table = analysis.format_table(rows)
  paired = analysis.format_paired(rows)
  if paired:
    table += "\n\n" + paired
  if not parallel.is_writer():  # a run over several processes: process 0 writes the reports
    return (table, results) if return_results else table
  analysis.plot_curves(results, os.path.join(workdir, "comparison.png"),
                       title=title(config), metric=metric)
  names, penalty = analysis.penalty_matrix({"this": results}, metric=metric)
  with open(os.path.join(workdir, "comparison.md"), "w") as f:
    f.write(f"{title(config)}\n\nMeans ± 95% t-intervals over seeds.\n\n{table}\n\n"
            + analysis.format_penalty_matrix(names, penalty, 1)
            + "\n\n## Diagnostics per round\n\n"
            + analysis.format_diagnostics(analysis.diagnostics(results)) + "\n")
  with open(os.path.join(workdir, "comparison.json"), "w") as f:
    json.dump(rows, f, indent=2)
  return (table, results) if return_results else table


def compare_settings(config, workdir: str, acquisitions, settings, **kwargs) -> str:
  """:func:`compare` once per setting (``label:field=value:...``) in ``workdir/<label>/``, then
  ``workdir/settings.md``: every setting's table and the penalty matrix over all settings."""
  parsed = []
  for spec in settings:
    label, *overrides = spec.split(":")
    if not label or "=" in label:
      raise ValueError(f"setting {spec!r} needs a label first: label:field=value:...")
    parsed.append((label, config_lib.with_overrides(config, overrides,
                                                    context=f"setting {spec!r}")))
  if len({label for label, _ in parsed}) != len(parsed):
    raise ValueError(f"setting labels must differ, got {[label for label, _ in parsed]}")
  if not kwargs.get("plot_only"):
    for _, cfg in parsed:  # every setting's errors before any of them runs
      for _, strategy in (parse_strategy(a, cfg) for a in acquisitions):
        config_lib.check(strategy)
  parts, all_results = [], {}
  for label, cfg in parsed:
    table, results = compare(cfg, os.path.join(workdir, label), acquisitions,
                             return_results=True, **kwargs)
    all_results[label] = results
    parts.append(f"## {label}\n\n{title(cfg)}\n\n{table}")
  names, penalty = analysis.penalty_matrix(all_results,
                                           metric=tasks_lib.get_task(config.task).headline)
  report = ("Means ± 95% t-intervals over seeds.\n\n" + "\n\n".join(parts)
            + "\n\n## All settings\n\n"
            + analysis.format_penalty_matrix(names, penalty, len(parsed)) + "\n")
  if parallel.is_writer():
    with open(os.path.join(workdir, "settings.md"), "w") as f:
      f.write(report)
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # progress is printed per round; keep orbax quiet

  def run():
    if _SETTINGS.value:
      print(compare_settings(_CONFIG.value, _WORKDIR.value, _ACQUISITIONS.value,
                             _SETTINGS.value, plot_only=_PLOT_ONLY.value,
                             stabilizing_thresholds=_STABILIZING.value))
      print(f"report: {os.path.join(_WORKDIR.value, 'settings.md')}")
      return
    table = compare(_CONFIG.value, _WORKDIR.value, _ACQUISITIONS.value,
                    plot_only=_PLOT_ONLY.value, stabilizing_thresholds=_STABILIZING.value)
    print(table)
    print(f"plot: {os.path.join(_WORKDIR.value, 'comparison.png')}")

  cli.guarded(run)


if __name__ == "__main__":
  cli.run_app(main)
