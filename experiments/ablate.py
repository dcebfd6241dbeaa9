r"""One-factor-at-a-time ablations: every variant runs every acquisition, one table with intervals.

  python -m experiments.ablate --config=experiments/configs/digits.py --config.num_seeds=5 \
      --acquisitions=random,bald \
      --variants=base,wd_l2_n:train.decay=l2:train.weight_decay_scale=inverse_n:train.weight_decay=7 \
      --workdir=runs/ablation_digits

A variant is ``name`` (the config as is) or ``name:field=value:...`` (the overrides of
``experiments.compare``'s strategies, nested fields included); ``name@bald+entropy:...`` runs only
those acquisitions (a factor that cannot change the reference acquisition, such as the number of
MC samples for random, then takes its reference runs from the first variant). Variant v with
acquisition a runs in ``workdir/<v>/<a>/`` (resumable). ``workdir/ablation.md`` and ``ablation.json`` get, per variant
and acquisition, final accuracy and AUC with 95% intervals over seeds, the largest round-to-round
drop, round-0 NLL and ECE and the mean pool BALD, and for every acquisition but the first its
paired AUC difference to the first (the same seeds share their initial set) with a 95% interval.
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
import numpy as np

from dal_jax import analysis
from dal_jax import cli
from dal_jax import config as config_lib
from dal_jax import experiment

FLAGS = {}


def define_flags():
  """The command's flags (defined only when run as a command, so importing this module next to
  ``experiments.compare`` does not define ``--config`` twice)."""
  FLAGS["config"] = config_flags.DEFINE_config_file("config", None, cli.CONFIG_HELP,
                                                    lock_config=True)
  FLAGS["workdir"] = flags.DEFINE_string("workdir", None, "parent directory of the variants' runs")
  FLAGS["acquisitions"] = flags.DEFINE_list(
      "acquisitions", ["random", "bald"],
      "acquisitions every variant runs; the first is the reference of the paired differences")
  FLAGS["variants"] = flags.DEFINE_list("variants", ["base"],
                                        "name or name:field=value:... per variant")
  FLAGS["reference"] = flags.DEFINE_string(
      "reference_variant", "", "variant whose runs of the first acquisition serve variants run "
      "without it (default: the first variant)")
  flags.mark_flags_as_required(["config", "workdir"])


def variant_configs(config, variants, acquisitions):
  """``[(variant, acquisition, config)]``, every config checked before anything runs."""
  out = []
  for spec in variants:
    name, *overrides = spec.split(":")
    name, _, only = name.partition("@")
    chosen = only.split("+") if only else list(acquisitions)
    unknown = [a for a in chosen if a not in acquisitions]
    if unknown:
      raise ValueError(f"variant {spec!r} names acquisitions {unknown} that are not in "
                       f"--acquisitions={list(acquisitions)}")
    for acq in chosen:
      cfg = config_lib.with_overrides(config, overrides, context=f"variant {spec!r}")
      cfg.acquisition = acq
      config_lib.check(cfg)
      experiment.build_method(cfg)
      out.append((name, acq, cfg))
  return out


def _round0(runs, key):
  vals = [r[0].get(key) for r in runs.values() if r and r[0].get(key) is not None]
  return float(np.mean(vals)) if vals else None


def summarize(results, acquisitions, reference_variant: str = ""):
  """Rows of the ablation table from ``{variant: {acquisition: runs}}``."""
  rows = []
  first = (results[reference_variant] if reference_variant
           else next(iter(results.values()), {}))
  for variant, by_acq in results.items():
    ref = by_acq.get(acquisitions[0], first.get(acquisitions[0]))
    for acq, runs in by_acq.items():
      labels, acc = analysis.curve(runs)
      auc = analysis.area_under_curve(labels, acc)
      final_m, final_h = analysis.mean_ci(acc[:, -1])
      auc_m, auc_h = analysis.mean_ci(auc)
      row = {"variant": variant, "acquisition": acq, "seeds": acc.shape[0],
             "final_labels": int(labels[-1]),
             "final_accuracy": [float(final_m), float(final_h)],
             "auc": [float(auc_m), float(auc_h)],
             "max_drop": float(analysis.max_drop(acc).max()),
             "round0_nll": _round0(runs, "nll"), "round0_ece": _round0(runs, "ece"),
             "pool_bald": analysis.diagnostics({acq: runs})[acq][0]["pool_bald"]}
      if ref is not None and acq != acquisitions[0]:
        try:
          row["auc_minus_ref"] = analysis.paired_to_reference(runs, ref)["auc_diff"]
        except ValueError:  # another labeled-set grid (a variant of k or budget): no pairing
          pass
      rows.append(row)
  return rows


def format_rows(rows, reference: str) -> str:
  def pm(v):
    return f"{v[0]:.4f}" + ("" if v[1] is None or np.isnan(v[1]) else f" ± {v[1]:.4f}")

  def opt(v, spec):
    return "–" if v is None else format(v, spec)

  lines = ["| variant | acquisition | seeds | final accuracy | AUC | AUC − "
           f"{reference} (paired) | largest drop | round-0 NLL | round-0 ECE | pool BALD "
           "(round 0) |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    diff = pm(r["auc_minus_ref"]) if "auc_minus_ref" in r else "–"
    lines.append(f"| {r['variant']} | {r['acquisition']} | {r['seeds']} | "
                 f"{pm(r['final_accuracy'])} | {pm(r['auc'])} | {diff} | {r['max_drop']:.4f} | "
                 f"{opt(r['round0_nll'], '.3f')} | {opt(r['round0_ece'], '.3f')} | "
                 f"{opt(r['pool_bald'], '.4f')} |")
  return "\n".join(lines)


def ablate(config, workdir, variants, acquisitions, reference_variant: str = "") -> str:
  runs = variant_configs(config, variants, acquisitions)
  names = [v for v, _, _ in runs]
  if reference_variant and reference_variant not in names:
    raise ValueError(f"--reference_variant={reference_variant!r} is not one of the variants "
                     f"{sorted(set(names))}")
  splits = experiment.load_splits(runs[0][2])
  results = {}
  for variant, acq, cfg in runs:
    sub = os.path.join(workdir, variant, acq)
    print(f"== {variant} / {acq}", flush=True)
    experiment.run_experiment(cfg, sub, splits=splits)
    results.setdefault(variant, {})[acq] = analysis.load_metrics(sub)
  rows = summarize(results, list(acquisitions), reference_variant)
  table = format_rows(rows, acquisitions[0])
  spec = "\n".join(f"- `{v}`" for v in variants)
  ref = reference_variant or variants[0].split(":")[0].split("@")[0]
  spec += (f"\n\nA variant run with only some acquisitions takes its {acquisitions[0]} runs from "
           f"`{ref}` for the paired difference.")
  with open(os.path.join(workdir, "ablation.md"), "w") as f:
    f.write(f"Variants (overrides of the config):\n\n{spec}\n\nMeans ± 95% t-intervals over "
            f"seeds.\n\n{table}\n")
  with open(os.path.join(workdir, "ablation.json"), "w") as f:
    json.dump({"variants": list(variants), "rows": rows}, f, indent=2)
  return table


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  f = {k: v.value for k, v in FLAGS.items()}
  cli.guarded(lambda: print(ablate(f["config"], f["workdir"], f["variants"], f["acquisitions"],
                                   f["reference"])))


if __name__ == "__main__":
  define_flags()
  cli.run_app(main)
