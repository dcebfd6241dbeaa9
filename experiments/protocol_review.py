r"""Published-protocol review: one protocol recipe's curves next to another's, with the paper's
numbers on the same x-axis convention.

  python -m experiments.protocol_review --paper=gal2017 \
      --runs=gal2017=runs/protocols/gal2017_digits,default=runs/protocols/default_digits \
      --out=experiments/results/protocols/gal2017_digits/review

Each ``name=workdir`` is an ``experiments.compare`` workdir (one subdirectory per strategy). It
writes ``review.json`` (per recipe and strategy: the mean test accuracy with its 95% Student-t
interval at every labeled-set size all seeds reached, the median over seeds (Kirsch et al. report
medians), and the labels to ``--target`` per seed and their median, counted as the paper counts
them; no interval from one seed; a seed that never reaches the target counts as infinitely many
labels in the median), ``review.md`` (the same as tables, the paper's numbers above them) and
``review.png`` (every recipe's curves, bands = 95% intervals).
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
from absl import app
from absl import flags

from dal_jax import analysis

# What the papers report on MNIST, and how they count labels.
PAPERS = {
    "gal2017": {
        "paper": "Gal, Islam & Ghahramani 2017, Table 1 (MNIST, 20 initial labels)",
        "counting": "acquired",
        "labels_to_90": {"variation ratios": 120, "bald": 145, "max entropy": 165,
                         "mean std": 230, "random": 255},
    },
    "kirsch2019": {
        "paper": "Kirsch, van Amersfoort & Gal 2019, Table 1 (MNIST, acquisition size 10, "
                 "median of 6 runs)",
        "counting": "labels",
        "labels_to_90": {"bald": 120, "batchbald": 100},
    },
}

_RUNS = flags.DEFINE_string("runs", None, "comma-separated name=workdir")
_OUT = flags.DEFINE_string("out", None, "output directory")
_PAPER = flags.DEFINE_enum("paper", "gal2017", sorted(PAPERS), "whose numbers to state")
_TARGET = flags.DEFINE_float("target", 0.9, "accuracy whose label cost is reported")
_INITIAL = flags.DEFINE_integer("initial", 20, "initial labeled set (subtracted when the paper "
                                "counts acquired labels)")


def review(runs: dict[str, str], paper: str, target: float, initial: int) -> dict:
  spec = PAPERS[paper]
  count_from = initial if spec["counting"] == "acquired" else 0
  out = {"paper": spec, "target": target, "counted_from": count_from, "recipes": {}}
  for recipe, workdir in runs.items():
    strategies = sorted(d for d in os.listdir(workdir)
                        if os.path.isdir(os.path.join(workdir, d)))
    out["recipes"][recipe] = {"workdir": workdir, "strategies": {}}
    for strategy in strategies:
      labels, acc = analysis.curve(analysis.load_metrics(os.path.join(workdir, strategy)))
      mean, half = analysis.mean_ci(acc)
      reach = [None if r is None else r - count_from
               for r in analysis.labels_to_reach(labels, acc, target)]
      out["recipes"][recipe]["strategies"][strategy] = {
          "seeds": int(acc.shape[0]), "labels": labels.tolist(),
          "accuracy_mean": mean.tolist(),
          "accuracy_ci": None if acc.shape[0] < 2 else half.tolist(),
          "accuracy_median": np.median(acc, axis=0).tolist(),
          "labels_to_target": reach,
          "labels_to_target_median": median_reach(reach)}
  return out


def median_reach(reach: list[float | None]) -> float | None:
  """The median over seeds of the labels to the target, a seed that never reached it counting as
  infinitely many (None when the median itself is not reached)."""
  m = float(np.median([np.inf if r is None else r for r in reach]))
  return None if np.isinf(m) else m


def to_markdown(r: dict, checkpoints=(50, 100, 150, 200, 250, 300)) -> str:
  spec = r["paper"]
  unit = "acquired labels" if spec["counting"] == "acquired" else "labels (initial included)"
  lines = [f"Paper ({spec['paper']}): {unit} to 90% accuracy: "
           + ", ".join(f"{k} {v}" for k, v in spec["labels_to_90"].items()) + ".", ""]
  lines.append(f"dal_jax, {unit} to {r['target']:.0%} (per seed; — = not reached):")
  lines.append("")
  lines.append("| recipe | strategy | seeds | " + " | ".join(f"acc @ {c}" for c in checkpoints)
               + f" | {unit} to {r['target']:.0%} | median |")
  lines.append("|---|---|---|" + "---|" * len(checkpoints) + "---|---|")
  for recipe, block in r["recipes"].items():
    for strategy, s in block["strategies"].items():
      cells = []
      for c in checkpoints:
        if c in s["labels"]:
          i = s["labels"].index(c)
          ci = "" if s["accuracy_ci"] is None else f" ± {s['accuracy_ci'][i]:.3f}"
          cells.append(f"{s['accuracy_mean'][i]:.3f}{ci}")
        else:
          cells.append("")
      reach = ", ".join("—" if v is None else str(int(v)) for v in s["labels_to_target"])
      med = s["labels_to_target_median"]
      lines.append(f"| {recipe} | {strategy} | {s['seeds']} | " + " | ".join(cells)
                   + f" | {reach} | {'—' if med is None else int(med)} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  runs = dict(item.split("=", 1) for item in _RUNS.value.split(","))
  r = review(runs, _PAPER.value, _TARGET.value, _INITIAL.value)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "review.json"), "w") as f:
    json.dump(r, f, indent=1)
  with open(os.path.join(_OUT.value, "review.md"), "w") as f:
    f.write(to_markdown(r))
  curves = {f"{recipe} {strategy}": analysis.load_metrics(os.path.join(w, strategy))
            for recipe, w in runs.items()
            for strategy in sorted(r["recipes"][recipe]["strategies"])}
  paper = PAPERS[_PAPER.value]["paper"]
  analysis.plot_curves(curves, os.path.join(_OUT.value, "review.png"),
                       title=textwrap.fill(f"recipes {', '.join(runs)} (paper: {paper})", 70))
  print(to_markdown(r))


if __name__ == "__main__":
  flags.mark_flags_as_required(["runs", "out"])
  app.run(main)
