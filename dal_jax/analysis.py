"""Comparing strategies: learning curves with 95% confidence intervals over seeds, summary table,
round-to-round drops, paired tests and the pairwise penalty matrix of Ash et al. 2020, plot.

Intervals are Student-t intervals of the mean over seeds, ``mean ± t_{0.975, n-1} · s / √n`` with
``s`` the sample standard deviation (ddof = 1); with one seed there is no interval (NaN).
"""

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


def t_critical(n: int, level: float = 0.95) -> float:
  """Two-sided Student-t critical value for ``n`` samples (``n - 1`` degrees of freedom);
  NaN for ``n < 2``."""
  if n < 2:
    return float("nan")
  from scipy import stats  # scikit-learn's dependency; only needed for intervals
  return float(stats.t.ppf(0.5 + level / 2, n - 1))


def mean_ci(values, level: float = 0.95, axis: int = 0):
  """``(mean, half_width)`` along ``axis``: the ``level`` Student-t interval of the mean is
  ``mean ± half_width`` (half_width NaN with fewer than 2 values)."""
  v = np.asarray(values, np.float64)
  n = v.shape[axis]
  mean = v.mean(axis=axis)
  if n < 2:
    return mean, np.full_like(mean, np.nan)
  return mean, t_critical(n, level) * v.std(axis=axis, ddof=1) / np.sqrt(n)


def max_drop(values: np.ndarray) -> np.ndarray:
  """Per seed: the largest fall of accuracy from one round to the next (0 if it never falls);
  ``values`` is ``[num_seeds, num_rounds]``."""
  v = np.asarray(values, np.float64)
  if v.shape[-1] < 2:
    return np.zeros(v.shape[:-1])
  return np.maximum(0.0, np.max(v[..., :-1] - v[..., 1:], axis=-1))


def paired_beats(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> np.ndarray:
  """Per labeled-set size: whether ``a`` beats ``b`` by a paired two-sided t-test over seeds.

  ``a``, ``b`` are ``[num_seeds, L]`` accuracies of the same seeds (same initial sets). With
  differences ``d`` over the n seeds, ``t = √n · mean(d) / std(d, ddof=1)``, and ``a`` beats ``b``
  where ``t > t_{(1+level)/2, n-1}`` (Ash et al. 2020, §4: 2.776 for their 5 seeds). A zero
  spread counts as a win if the mean difference is positive. Fewer than 2 seeds: never.
  """
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  n = d.shape[0]
  if n < 2:
    return np.zeros(d.shape[1], bool)
  mean, sd = d.mean(0), d.std(0, ddof=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    t = np.where(sd > 0, np.sqrt(n) * mean / np.where(sd > 0, sd, 1.0),
                 np.where(mean > 0, np.inf, 0.0))
  return t > t_critical(n, level)


def penalty_matrix(settings: dict[str, dict[str, dict[int, list[dict[str, Any]]]]],
                   level: float = 0.95, metric: str = "accuracy") -> tuple[list[str], np.ndarray]:
  """The pairwise penalty matrix of Ash et al. 2020 (BADGE, §4) over several settings.

  For every setting (a protocol: dataset, starting budget, query size, ...) and every ordered pair
  of strategies (i, j) run in it, each of the L labeled-set sizes both curves reached (the first,
  the shared initial set, excluded) where i beats j by :func:`paired_beats` adds ``1 / L`` to
  ``P[i, j]``. ``P[i, j]`` is thus the number of settings' worth of evidence that i is better
  than j; a column's sum is how often a strategy lost.

  Args:
    settings: ``{setting: {strategy: {seed: round records}}}`` (:func:`load_metrics` per
      strategy); only seeds common to both strategies are paired.

  Returns:
    ``(strategies, P)`` with ``P`` ``[K, K]``.
  """
  names = []
  for runs in settings.values():
    names += [s for s in runs if s not in names]
  index = {s: i for i, s in enumerate(names)}
  p = np.zeros((len(names), len(names)))
  for runs in settings.values():
    for a in runs:
      for b in runs:
        if a == b:
          continue
        seeds = sorted(set(runs[a]) & set(runs[b]))
        if len(seeds) < 2:
          continue
        la, va = curve({s: runs[a][s] for s in seeds}, metric)
        lb, vb = curve({s: runs[b][s] for s in seeds}, metric)
        length = min(la.shape[0], lb.shape[0])
        if length < 2 or not np.array_equal(la[:length], lb[:length]):
          continue
        wins = paired_beats(va[:, 1:length], vb[:, 1:length], level)
        p[index[a], index[b]] += wins.sum() / (length - 1)
  return names, p


def format_penalty_matrix(names: list[str], p: np.ndarray, settings: int) -> str:
  """Markdown: row i, column j = P[i, j] (how much i beats j); last row: column sums (losses)."""
  lines = [f"Pairwise penalty matrix (Ash et al. 2020) over {settings} setting(s): row beats "
           "column at that fraction of labeled-set sizes (paired t-test over seeds, 95%); the "
           "last row sums each column (lower is better).", "",
           "| beats → | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for i, a in enumerate(names):
    lines.append(f"| {a} | " + " | ".join("–" if i == j else f"{p[i, j]:.2f}"
                                          for j in range(len(names))) + " |")
  lines.append("| **lost** | " + " | ".join(f"**{v:.2f}**" for v in p.sum(0)) + " |")
  return "\n".join(lines)


def labels_to_reach(labels: np.ndarray, values: np.ndarray, target: float) -> list[float | None]:
  """Per seed: the first labeled-set size whose accuracy is ``>= target`` (None if never)."""
  out = []
  for v in values:
    hit = np.nonzero(v >= target)[0]
    out.append(float(labels[hit[0]]) if hit.size else None)
  return out


def paired_to_reference(runs: dict[int, list[dict[str, Any]]],
                        reference: dict[int, list[dict[str, Any]]], *,
                        count_from: int = 0, metric: str = "accuracy") -> dict[str, Any]:
  """A strategy against a reference strategy (usually random) on the seeds both ran (a seed fixes
  the initial set and the round keys, so differences are paired), over the rounds both reached.

  Returns ``auc_diff`` and ``final_diff``: ``[mean, 95% half-width]`` of the per-seed
  differences; ``labels_to_reference_final``: per seed, the first labeled-set size at which the
  strategy reaches the reference's mean final accuracy (None if never); and
  ``label_fraction``: ``[mean, half-width]`` over the seeds that reached it of those labels
  divided by the reference's final labels, both counted from ``count_from`` (a protocol that
  counts acquired labels only passes its initial-set size). ``reached``: how many seeds did.
  """
  seeds = sorted(set(runs) & set(reference))
  if not seeds:
    raise ValueError("no seed was run by both the strategy and its reference")
  la, va = curve({s: runs[s] for s in seeds}, metric)
  lr, vr = curve({s: reference[s] for s in seeds}, metric)
  n = min(len(la), len(lr))
  if not np.array_equal(la[:n], lr[:n]):
    raise ValueError(f"the strategy and its reference labeled different set sizes "
                     f"({la[:n].tolist()} vs {lr[:n].tolist()}); they cannot be paired")
  auc = area_under_curve(la[:n], va[:, :n]) - area_under_curve(lr[:n], vr[:, :n])
  final = va[:, n - 1] - vr[:, n - 1]
  target = float(vr[:, n - 1].mean())
  reach = labels_to_reach(la[:n], va[:, :n], target)
  span = float(lr[n - 1]) - count_from
  fractions = [(r - count_from) / span for r in reach if r is not None] if span > 0 else []
  am, ah = mean_ci(auc)
  fm, fh = mean_ci(final)
  return {"reference_final_accuracy": target, "reference_final_labels": int(lr[n - 1]),
          "auc_diff": [float(am), _half(auc)], "final_diff": [float(fm), _half(final)],
          "labels_to_reference_final": reach, "reached": len(fractions),
          "label_fraction": ([float(np.mean(fractions)), _half(fractions)] if fractions
                             else None), "seeds": len(seeds)}


def format_paired(rows: list[dict[str, Any]]) -> str:
  """A Markdown table of the ``paired`` entries of :func:`summarize` rows (empty when none)."""
  paired = [r for r in rows if r.get("paired")]
  if not paired:
    return ""
  ref = paired[0]["paired"]
  metric = rows[0].get("metric", "accuracy")
  counted = "acquired labels" if rows[0].get("labels_counted_from") else "labels"
  lines = [f"Paired with `{ref['reference']}` by seed (a seed fixes the initial set unless a "
           "strategy chooses its own cold start): differences with 95% t-intervals; the last "
           "column is the fraction of "
           f"{ref['reference']}'s final {counted} ({ref['reference_final_labels']}) at which the "
           f"strategy reaches {ref['reference']}'s mean final {metric} "
           f"({ref['reference_final_accuracy']:.4f}).", "",
           f"| strategy | AUC − {ref['reference']} | final {metric} − {ref['reference']} | "
           f"labels to {ref['reference']}'s final {metric} |", "|---|---|---|---|"]
  for r in paired:
    p = r["paired"]
    frac = ("not reached" if p["label_fraction"] is None else
            _pm(100 * p["label_fraction"][0],
                None if p["label_fraction"][1] is None else 100 * p["label_fraction"][1], ".0f")
            + f" % ({p['reached']}/{p['seeds']} seeds)")
    lines.append(f"| {r['strategy']} | {_pm(*p['auc_diff'])} | {_pm(*p['final_diff'])} | "
                 f"{frac} |")
  return "\n".join(lines)


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
              stabilizing_thresholds: tuple[float, ...] = (),
              count_from: int = 0, metric: str = "accuracy") -> list[dict[str, Any]]:
  """One row per strategy: final accuracy, AUC, labels to reach ``target`` (mean, std and 95%
  interval half-width over seeds), the largest round-to-round accuracy drop, every strategy after
  the first paired with the first (``paired``: :func:`paired_to_reference`), and, for runs that
  recorded kappas, where stabilizing predictions would have stopped at each of
  ``stabilizing_thresholds``. ``count_from`` is subtracted from the labels to the target (a
  protocol that counts acquired labels only passes its initial-set size). ``metric`` is the
  record read as the curve (the task's headline: ``accuracy``, ``miou``); the rows' keys keep
  the name ``accuracy`` and carry ``metric``."""
  rows = []
  reference = next(iter(results), None)
  for name, runs in results.items():
    labels, acc = curve(runs, metric)
    auc = area_under_curve(labels, acc)
    reach = labels_to_reach(labels, acc, target)
    reached = [r - count_from for r in reach if r is not None]
    hist = np.sum([rec["selected_class_histogram"] for r in runs.values() for rec in r
                   if rec.get("selected_class_histogram")], axis=0)
    drops = max_drop(acc)
    rows.append({
        "strategy": name, "seeds": acc.shape[0], "final_labels": int(labels[-1]),
        **({"metric": metric} if metric != "accuracy" else {}),
        "final_accuracy_mean": float(acc[:, -1].mean()),
        "final_accuracy_std": float(acc[:, -1].std()),
        "final_accuracy_ci": _half(acc[:, -1]),
        "auc_mean": float(auc.mean()), "auc_std": float(auc.std()), "auc_ci": _half(auc),
        "target_accuracy": target, "labels_to_target": reach,
        "labels_counted_from": count_from,
        "labels_to_target_mean": float(np.mean(reached)) if reached else None,
        "labels_to_target_ci": _half(reached) if reached else None,
        "seeds_reaching_target": len(reached),
        "max_drop": drops.tolist(), "max_drop_mean": float(drops.mean()),
        "acquired_class_histogram": np.asarray(hist, int).tolist()})
    if name != reference:
      try:
        rows[-1]["paired"] = {"reference": reference, **paired_to_reference(
            runs, results[reference], count_from=count_from, metric=metric)}
      except ValueError:  # no shared seeds or another protocol: nothing to pair
        pass
    if any(rec.get("kappa") is not None for r in runs.values() for rec in r):
      stops = {}
      for t in stabilizing_thresholds:
        per_seed = [stabilizing_stop(r, window=stabilizing_window, threshold=t)
                    for r in runs.values()]
        stops[str(t)] = per_seed
      rows[-1]["stabilizing_window"] = stabilizing_window
      rows[-1]["stabilizing_stops"] = stops
  return rows


def _half(values) -> float | None:
  """95% interval half-width of a list of per-seed values (None with one value)."""
  half = float(mean_ci(np.asarray(values, np.float64))[1])
  return None if np.isnan(half) else half


def _pm(mean, half, spec=".4f") -> str:
  return f"{mean:{spec}}" + ("" if half is None else f" ± {half:{spec}}")


def _stop_cell(per_seed: list[dict[str, Any] | None]) -> str:
  fired = [s for s in per_seed if s is not None]
  if not fired:
    return "never"
  labels = np.mean([s["num_labels"] for s in fired])
  acc = np.mean([s["accuracy"] for s in fired])
  return f"{labels:.0f} labels, acc {acc:.4f} ({len(fired)}/{len(per_seed)} seeds)"


def format_table(rows: list[dict[str, Any]]) -> str:
  """A Markdown table of :func:`summarize` rows: means ± 95% interval half-widths over seeds;
  "largest drop" is the largest round-to-round accuracy fall of any seed."""
  target = rows[0]["target_accuracy"] if rows else 0.0
  thresholds = sorted({t for r in rows for t in r.get("stabilizing_stops", {})}, key=float)
  extra = "".join(f" stabilizing stop (κ̄ ≥ {t}) |" for t in thresholds)
  counted = " acquired" if rows and rows[0].get("labels_counted_from") else ""
  metric = rows[0].get("metric", "accuracy") if rows else "accuracy"
  lines = [f"| strategy | seeds | final labels | final {metric} | AUC |{counted} labels to "
           f"{target:.0%} | largest drop |" + extra,
           "|---|---|---|---|---|---|---|" + "---|" * len(thresholds)]
  for r in rows:
    if r["labels_to_target_mean"] is None:
      reach = "not reached"
    else:
      reach = (_pm(r["labels_to_target_mean"], r.get("labels_to_target_ci"), ".0f")
               + f" ({r['seeds_reaching_target']}/{r['seeds']} seeds)")
    drop = f"{max(r['max_drop']):.4f}" if r.get("max_drop") else "–"
    lines.append(f"| {r['strategy']} | {r['seeds']} | {r['final_labels']} | "
                 f"{_pm(r['final_accuracy_mean'], r.get('final_accuracy_ci'))} | "
                 f"{_pm(r['auc_mean'], r.get('auc_ci'))} | {reach} | {drop} |"
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
  """Accuracy-vs-labels curves to a PNG: the mean over seeds with its 95% Student-t interval as
  the band (no band with one seed); the axes' caption says so."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name, runs in results.items():
    labels, values = curve(runs, metric)
    mean, half = mean_ci(values)
    ax.plot(labels, mean, marker="o", ms=3, label=f"{name} ({values.shape[0]} seeds)")
    if not np.isnan(half).all():
      ax.fill_between(labels, mean - half, mean + half, alpha=0.2)
  ax.set_xlabel("labeled examples\n(line: mean over seeds; band: 95% t-interval of the mean)",
                fontsize=8)
  ax.set_ylabel(f"test {metric}")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
