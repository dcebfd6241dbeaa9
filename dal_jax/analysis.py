"""Comparing strategies: learning curves (mean ± std over seeds), summary table, plot."""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import numpy as np


def load_metrics(workdir: str) -> dict[int, list[dict[str, Any]]]:
  """``{seed: [round records]}`` from ``workdir/seed_*/metrics.jsonl``."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, "seed_*", "metrics.jsonl"))):
    seed = int(os.path.basename(os.path.dirname(path)).split("_", 1)[1])
    with open(path) as f:
      records = [json.loads(line) for line in f if line.strip()]
    if records:
      out[seed] = records
  if not out:
    raise ValueError(f"no metrics found under {workdir!r} (expected seed_*/metrics.jsonl)")
  return out


def curve(runs: dict[int, list[dict[str, Any]]], metric: str = "accuracy"):
  """Labels grid and per-seed values ``[num_seeds, num_points]`` on the rounds all seeds reached."""
  length = min(len(r) for r in runs.values())
  labels = np.array([rec["num_labels"] for rec in next(iter(runs.values()))[:length]])
  values = np.array([[rec[metric] for rec in r[:length]] for r in runs.values()])
  return labels, values


def area_under_curve(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
  """Normalised area under accuracy-vs-labels (trapezoid rule / label range), per seed."""
  if labels.shape[0] < 2:
    return values[:, 0]
  return np.trapezoid(values, labels, axis=-1) / (labels[-1] - labels[0])


def labels_to_reach(labels: np.ndarray, values: np.ndarray, target: float) -> list[float | None]:
  """Per seed: the first labeled-set size whose accuracy is ``>= target`` (None if never)."""
  out = []
  for v in values:
    hit = np.nonzero(v >= target)[0]
    out.append(float(labels[hit[0]]) if hit.size else None)
  return out


def stabilizing_stop(records: list[dict[str, Any]], *, window: int,
                     threshold: float) -> dict[str, Any] | None:
  """Where stabilizing predictions (Bloodgood & Vijay-Shanker 2009) would have stopped a run.

  Replays the rule on the recorded per-round kappas: the first round whose last ``window``
  kappas (between successive models on the stop set) all exist and average ``>= threshold``.

  Returns:
    ``{"round", "num_labels", "accuracy"}`` of that round, or None if the rule never fired.
  """
  kappas = [r.get("kappa") for r in records]
  for i in range(len(records)):
    last = kappas[max(0, i - window + 1):i + 1]
    if len(last) == window and all(k is not None for k in last) and np.mean(last) >= threshold:
      return {"round": records[i]["round"], "num_labels": records[i]["num_labels"],
              "accuracy": records[i]["accuracy"]}
  return None


def summarize(results: dict[str, dict[int, list[dict[str, Any]]]], *, target: float,
              stabilizing_window: int = 3,
              stabilizing_thresholds: tuple[float, ...] = ()) -> list[dict[str, Any]]:
  """One row per strategy: final accuracy, AUC, labels to reach ``target`` (mean ± std), and,
  for runs that recorded kappas, where stabilizing predictions would have stopped at each of
  ``stabilizing_thresholds``."""
  rows = []
  for name, runs in results.items():
    labels, acc = curve(runs)
    auc = area_under_curve(labels, acc)
    reach = labels_to_reach(labels, acc, target)
    reached = [r for r in reach if r is not None]
    hist = np.sum([rec["selected_class_histogram"] for r in runs.values() for rec in r
                   if rec.get("selected_class_histogram")], axis=0)
    rows.append({
        "strategy": name, "seeds": acc.shape[0], "final_labels": int(labels[-1]),
        "final_accuracy_mean": float(acc[:, -1].mean()),
        "final_accuracy_std": float(acc[:, -1].std()),
        "auc_mean": float(auc.mean()), "auc_std": float(auc.std()),
        "target_accuracy": target, "labels_to_target": reach,
        "labels_to_target_mean": float(np.mean(reached)) if reached else None,
        "seeds_reaching_target": len(reached),
        "acquired_class_histogram": np.asarray(hist, int).tolist()})
    if any(rec.get("kappa") is not None for r in runs.values() for rec in r):
      stops = {}
      for t in stabilizing_thresholds:
        per_seed = [stabilizing_stop(r, window=stabilizing_window, threshold=t)
                    for r in runs.values()]
        stops[str(t)] = per_seed
      rows[-1]["stabilizing_window"] = stabilizing_window
      rows[-1]["stabilizing_stops"] = stops
  return rows


def _stop_cell(per_seed: list[dict[str, Any] | None]) -> str:
  fired = [s for s in per_seed if s is not None]
  if not fired:
    return "never"
  labels = np.mean([s["num_labels"] for s in fired])
  acc = np.mean([s["accuracy"] for s in fired])
  return f"{labels:.0f} labels, acc {acc:.4f} ({len(fired)}/{len(per_seed)} seeds)"


def format_table(rows: list[dict[str, Any]]) -> str:
  """A Markdown table of :func:`summarize` rows."""
  target = rows[0]["target_accuracy"] if rows else 0.0
  thresholds = sorted({t for r in rows for t in r.get("stabilizing_stops", {})}, key=float)
  extra = "".join(f" stabilizing stop (κ̄ ≥ {t}) |" for t in thresholds)
  lines = [f"| strategy | seeds | final labels | final accuracy | AUC | labels to {target:.0%} |"
           + extra, "|---|---|---|---|---|---|" + "---|" * len(thresholds)]
  for r in rows:
    if r["labels_to_target_mean"] is None:
      reach = "not reached"
    else:
      reach = f"{r['labels_to_target_mean']:.0f} ({r['seeds_reaching_target']}/{r['seeds']} seeds)"
    lines.append(f"| {r['strategy']} | {r['seeds']} | {r['final_labels']} | "
                 f"{r['final_accuracy_mean']:.4f} ± {r['final_accuracy_std']:.4f} | "
                 f"{r['auc_mean']:.4f} ± {r['auc_std']:.4f} | {reach} |"
                 + "".join(f" {_stop_cell(r['stabilizing_stops'][t])} |"
                           if t in r.get("stabilizing_stops", {}) else " – |"
                           for t in thresholds))
  return "\n".join(lines)


def diagnostics(results: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, list[dict]]:
  """Per strategy and round, means over seeds of what explains a curve: test NLL and ECE (is the
  model calibrated?), the mean BALD of the scored candidates (do the MC samples disagree at
  all?) and the share of the batch's most frequent class (does the batch collapse onto one
  class?). Missing quantities are None."""
  out = {}
  for name, runs in results.items():
    rounds = sorted({rec["round"] for r in runs.values() for rec in r})
    rows = []
    for rnd in rounds:
      recs = [rec for r in runs.values() for rec in r if rec["round"] == rnd]

      def mean(key, recs=recs):
        vals = [rec[key] for rec in recs if rec.get(key) is not None]
        return float(np.mean(vals)) if vals else None

      shares = [max(h) / sum(h) for h in (rec.get("selected_class_histogram") for rec in recs)
                if h and sum(h)]
      rows.append({"round": rnd, "num_labels": mean("num_labels"), "accuracy": mean("accuracy"),
                   "nll": mean("nll"), "ece": mean("ece"), "pool_bald": mean("pool_bald"),
                   "top_class_share": float(np.mean(shares)) if shares else None})
    out[name] = rows
  return out


def format_diagnostics(diag: dict[str, list[dict[str, Any]]]) -> str:
  """Markdown: one table per strategy (means over seeds)."""
  def cell(v, spec):
    return "–" if v is None else format(v, spec)

  parts = []
  for name, rows in diag.items():
    lines = [f"**{name}** (means over seeds)", "",
             "| round | labels | accuracy | NLL | ECE | mean pool BALD | batch top-class share |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
      lines.append(f"| {r['round']} | {cell(r['num_labels'], '.0f')} | "
                   f"{cell(r['accuracy'], '.4f')} | {cell(r['nll'], '.3f')} | "
                   f"{cell(r['ece'], '.3f')} | {cell(r['pool_bald'], '.4f')} | "
                   f"{cell(r['top_class_share'], '.2f')} |")
    parts.append("\n".join(lines))
  return "\n\n".join(parts)


def plot_curves(results: dict[str, dict[int, list[dict[str, Any]]]], path: str, *,
                title: str = "", metric: str = "accuracy") -> None:
  """Accuracy-vs-labels curves, mean ± std over seeds, to a PNG."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name, runs in results.items():
    labels, values = curve(runs, metric)
    mean, std = values.mean(0), values.std(0)
    ax.plot(labels, mean, marker="o", ms=3, label=f"{name} ({values.shape[0]} seeds)")
    ax.fill_between(labels, mean - std, mean + std, alpha=0.2)
  ax.set_xlabel("labeled examples")
  ax.set_ylabel(f"test {metric}")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
