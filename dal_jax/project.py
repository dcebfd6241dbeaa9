"""Label your own data: the active learning loop with a real annotator in the middle.

A *project* is a directory; the same steps are the ``dal-jax`` command line tool
(:mod:`dal_jax.tool`) and this library API::

  from dal_jax import project
  p = project.create("shirts", pool="photos/", classes=["tee", "shirt", "coat"],
                     overrides={"model": "mlp", "acquisition": "entropy"})
  csv_path = p.query(k=20)          # queries/query_001.csv (+ a Label Studio tasks file)
  ...                               # the annotator fills in the `label` column
  p.ingest(csv_path)                # or a Label Studio JSON export
  p.query(k=20); ...
  print(p.status())                 # labels, classes, cross-validated accuracy estimate
  p.export()                        # export/model (orbax) + export/predictions.csv
  p.close()

Layout::

  PROJECT/project.json      pool source and shape, classes, the run config, the seed
  PROJECT/pool.csv          the pool's items: position, id, path (users only ever see ids)
  PROJECT/labels.jsonl      the label log: one JSON event per answer, append-only
  PROJECT/state.json        completed rounds, the pending query, status history
  PROJECT/method_state.npz  the method's state (a learned acquisition's networks, hooks)
  PROJECT/queries/          query_NNN.csv and query_NNN_tasks.json (Label Studio import)
  PROJECT/export/           the exported model and every pool item's prediction

Nothing labeled is ever lost: answers are appended to ``labels.jsonl`` by writing the old bytes
plus the new lines to a temporary file, fsync and rename (a crash leaves the old log or the new
one, never a torn one); every answer is checked before anything is written; the labeled set is
rebuilt from the log (the last answer per item wins, earlier ones stay as its history); ingesting
a file twice adds nothing; a second process on the project is refused (``.lock``).

Rounds follow the simulated loop exactly: a project with seed s draws its cold-start set and its
round keys as ``experiment.SeedRun`` does for seed s, so a scripted annotator answering from
ground truth reaches the same labeled set as :func:`dal_jax.loop.al_round` with a simulated
oracle.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dal_jax import config as config_lib
from dal_jax import learner as learner_lib
from dal_jax import loop as loop_lib
from dal_jax import models as models_lib
from dal_jax import pool as pool_lib
from dal_jax import training
from dal_jax import workdir as workdir_lib

SKIP_ANSWERS = ("skip", "unsure", "?")
COLD_STARTS = loop_lib.COLD_STARTS
PROJECT_VERSION = 1
_PROJECT_DEFAULTS = {"model": "mlp", "acquisition": "entropy", "mc_samples": 0,
                     "pool_subsample": 0, "val_size": 0}


def _now() -> str:
  return datetime.datetime.now().isoformat(timespec="seconds")


def atomic_write(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` via a temporary file, fsync and rename."""
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write_json(path: str, obj) -> None:
  atomic_write(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def _read_json(path: str, what: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{path} is missing: not a dal_jax project ({what})") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is corrupt ({e}); restore it from a backup") from None


def _parse_value(text: str):
  import ast

  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def make_config(config_file: str | None = None, overrides: dict[str, Any] | None = None
                ) -> ml_collections.ConfigDict:
  """The run config of a project: ``default_config()`` with the project defaults (a small MLP,
  entropy, no validation split), a config file's ``get_config()`` and ``field=value`` overrides."""
  if config_file:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dal_jax_project_config", config_file)
    if spec is None or not os.path.exists(config_file):
      raise ValueError(f"config file {config_file!r} does not exist")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  else:
    config = config_lib.default_config()
    for k, v in _PROJECT_DEFAULTS.items():
      config[k] = v
  for field, value in (overrides or {}).items():
    node, *path = field.split(".")
    target = config
    try:
      for p in [node, *path][:-1]:
        target = target[p]
      if isinstance(value, str):
        value = _parse_value(value)
      target[[node, *path][-1]] = value
    except (KeyError, AttributeError, TypeError) as e:
      raise ValueError(f"--set {field}={value!r}: {e}") from None
  config_lib.check(config)
  return config


class Project:
  """An open project (holds its lock until :meth:`close`). Use :func:`create` / :func:`open`."""

  def __init__(self, path: str, *, progress: bool = True):
    self.path = os.path.abspath(path)
    if not os.path.exists(os.path.join(self.path, "project.json")):
      raise ValueError(f"{self.path} is not a dal_jax project (no project.json); create one with "
                       "`dal-jax init`")
    self.lock = workdir_lib.WorkdirLock(self.path)
    self.progress = progress
    meta = _read_json(self._file("project.json"), "project.json")
    if meta.get("version") != PROJECT_VERSION:
      raise ValueError(f"{self._file('project.json')}: project version {meta.get('version')} is "
                       f"not {PROJECT_VERSION}")
    self.meta = meta
    self.classes: list[str] = meta["classes"]
    self.config = ml_collections.ConfigDict(meta["config"])
    self._pool = None

  # ---- files

  def _file(self, *parts: str) -> str:
    return os.path.join(self.path, *parts)

  def _say(self, msg: str) -> None:
    if self.progress:
      print(msg, file=sys.stderr, flush=True)

  @property
  def pool(self) -> pool_lib.Pool:
    """The decoded pool, checked against ``pool.csv`` (the same IDs in the same order)."""
    if self._pool is None:
      p = self.meta["pool"]
      pool = pool_lib.load_pool(p["source"], image_size=tuple(p["image_size"]),
                                channels=p["channels"], class_names=self.classes,
                                labels_from_folders=p["labels_from_folders"],
                                data_dir=p.get("data_dir"), progress=self.progress)
      with open(self._file("pool.csv"), encoding="utf-8") as f:
        stored = [row["id"] for row in csv.DictReader(f)]
      if stored != pool.ids:
        gone = sorted(set(stored) - set(pool.ids))[:5]
        new = sorted(set(pool.ids) - set(stored))[:5]
        raise ValueError(f"the pool at {p['source']} changed since `init` (missing: {gone}, "
                         f"new: {new}); create a new project for a new pool")
      self._pool = pool
    return self._pool

  def _state(self) -> dict[str, Any]:
    return _read_json(self._file("state.json"), "state.json")

  def events(self) -> list[dict[str, Any]]:
    """The label log, oldest first."""
    out = []
    with open(self._file("labels.jsonl"), encoding="utf-8") as f:
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            out.append(json.loads(line))
          except json.JSONDecodeError:
            raise ValueError(f"{self._file('labels.jsonl')}, line {n} is corrupt") from None
    return out

  def labels(self) -> dict[str, str]:
    """ID -> current class (the last answer of each item; skips leave labels as they are)."""
    current: dict[str, str] = {}
    for e in self.events():
      if e["event"] in ("label", "relabel"):
        current[e["id"]] = e["label"]
    return current

  def _append_events(self, events: list[dict[str, Any]]) -> None:
    path = self._file("labels.jsonl")
    with open(path, "rb") as f:
      old = f.read()
    new = b"".join((json.dumps(e, sort_keys=True) + "\n").encode() for e in events)
    atomic_write(path, old + new)

  # ---- the loop pieces

  def _keys(self):
    init_key, run_key = jax.random.split(jax.random.key(int(self.config.seed)))
    return init_key, run_key

  def _build(self):
    from dal_jax import experiment

    pool = self.pool
    model = experiment.model_for(self.config, pool.x.shape[1:], len(self.classes))
    method = experiment.build_method(self.config)
    learner = learner_lib.Learner(model=model, config=training.TrainConfig(**self.config.train),
                                  terms=method.loss_terms, chunk_size=self.config.chunk_size)
    return model, method, learner

  def _plain_learner(self) -> learner_lib.Learner:
    """The config's model and training, without the method's loss terms (cross-validation and
    the exported model are plain supervised fits on the labels)."""
    from dal_jax import experiment

    model = experiment.model_for(self.config, self.pool.x.shape[1:], len(self.classes))
    return learner_lib.Learner(model=model, config=training.TrainConfig(**self.config.train),
                               chunk_size=self.config.chunk_size)

  def _loop_state(self, method, setup, state_json) -> loop_lib.LoopState:
    pool, index = self.pool, {i: n for n, i in enumerate(self.pool.ids)}
    init_key, run_key = self._keys()
    n = len(pool.ids)
    labeled = np.zeros(n, bool)
    labels = np.full(n, loop_lib.UNKNOWN, np.int32)
    acquired = np.full(n, -1, np.int32)
    for e in self.events():
      if e["event"] in ("label", "relabel"):
        j = index[e["id"]]
        if not labeled[j]:
          acquired[j] = e["round"]
        labeled[j], labels[j] = True, self.classes.index(e["label"])
    template = loop_lib.init_method_state(method, init_key, setup)
    methods = template
    if os.path.exists(self._file("method_state.npz")):
      with np.load(self._file("method_state.npz")) as z:
        leaves = [z[f"a{i}"] for i in range(len(z.files))]
      methods = workdir_lib.from_leaves(template, leaves)
    return loop_lib.LoopState(
        labeled=jnp.asarray(labeled), labels=jnp.asarray(labels),
        acquired_round=jnp.asarray(acquired), round=jnp.int32(state_json["round"]),
        key=run_key, done=jnp.array(False), methods=methods)

  def _save_method_state(self, methods) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{f"a{i}": np.asarray(v) for i, v in
                     enumerate(workdir_lib.to_leaves(methods))})
    atomic_write(self._file("method_state.npz"), buf.getvalue())

  # ---- query

  def query(self, k: int | None = None, *, acquisition: str | None = None) -> str:
    """Selects the next ``k`` items to label and writes ``queries/query_NNN.csv`` (id, path,
    rank, score, predicted class and its probability, an empty ``label`` column for the
    annotator) and ``query_NNN_tasks.json`` (Label Studio tasks with the model's prediction
    as a pre-annotation). Without labels yet, the cold start picks them (``cold_start`` of
    ``project.json``: random, or k-means / core-set on the inputs). Returns the CSV path."""
    state_json = self._state()
    if state_json["pending"]:
      p = state_json["pending"]
      raise ValueError(f"query {p['query']:03d} ({self._rel(p['file'])}) is still pending: "
                       f"{len(p['ids'])} items unanswered; ingest the answers first (mark items "
                       f"you cannot label as 'skip')")
    if acquisition and acquisition != self.config.acquisition:
      self._switch_acquisition(acquisition)
    pool = self.pool
    labels = self.labels()
    k = int(k or self.config.query_size)
    n_unlabeled = len(pool.ids) - len(labels)
    if not 1 <= k <= n_unlabeled:
      raise ValueError(f"k={k} must be in [1, {n_unlabeled}] (unlabeled items left)")
    qnum = state_json["queries"] + 1
    init_key, _ = self._keys()
    model, method, learner = self._build()
    if not labels:
      cold = self.meta.get("cold_start", "random")
      self._say(f"no labels yet: cold start ({cold}) picks {k} of {len(pool.ids)} items")
      chosen = loop_lib.cold_start_indices(init_key, cold, pool.x, k,
                                           subsample=self.config.pool_subsample)
      rows = [(int(j), None, None, None) for j in chosen]
      round_ = None
    else:
      setup = loop_lib.make_setup(model, jnp.asarray(pool.x), len(self.classes), 10**9)
      state = self._loop_state(method, setup, state_json)
      rc = loop_lib.RoundConfig(query_size=k, mc_samples=self.config.mc_samples,
                                pool_subsample=self.config.pool_subsample, budget=10**9,
                                ensemble_size=self.config.ensemble_size)
      self._say(f"round {int(state.round)}: training on {len(labels)} labels, then scoring "
                f"{n_unlabeled} unlabeled items with {self.config.acquisition}")
      data = loop_lib.LoopData(x_pool=jnp.asarray(pool.x))
      (state,), (q,), variables = loop_lib.propose(
          [state], method=method, learner=learner, data=data, config=rc,
          num_classes=len(self.classes))
      if q.stop is not None:
        raise ValueError(f"the run stops: {q.stop} (nothing selected)")
      self._save_method_state(state.methods)
      probs = self._probabilities(learner, variables, data.x_pool[np.asarray(q.indices)])
      rows = [(int(j), float(-(p * np.log(np.maximum(p, 1e-12))).sum()), int(p.argmax()),
               float(p.max())) for j, p in zip(q.indices, probs)]
      round_ = int(state.round)
      self._say(f"trained {q.metrics['train_steps']} steps ({q.metrics['time_train']:.1f}s), "
                f"selected {k} ({q.metrics['time_score'] + q.metrics['time_select']:.1f}s)")
    csv_path = self._write_query(qnum, rows)
    ids = [pool.ids[j] for j, *_ in rows]
    state_json.update(queries=qnum, pending={"query": qnum, "round": round_, "file": csv_path,
                                             "ids": ids, "all_ids": ids})
    _write_json(self._file("state.json"), state_json)
    self._say(f"wrote {self._rel(csv_path)} and {self._rel(csv_path[:-4] + '_tasks.json')}")
    return csv_path

  def _switch_acquisition(self, acquisition: str) -> None:
    """Uses another acquisition from now on (stored in ``project.json``); the old method's
    state (a learned acquisition's networks) does not carry over."""
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.acquisition = acquisition
    if acquisition not in config.methods:
      defaults = config_lib.default_config().methods
      if acquisition in defaults:
        config.methods[acquisition] = defaults[acquisition]
    config_lib.check(config)
    from dal_jax import experiment
    experiment.build_method(config)  # unknown names and bad options fail here, before any write
    self.meta["config"] = config_lib.resolved(config)
    _write_json(self._file("project.json"), self.meta)
    if os.path.exists(self._file("method_state.npz")):
      os.remove(self._file("method_state.npz"))
    self.config = config
    self._say(f"acquisition is now {acquisition} (stored in project.json)")

  def _rel(self, path: str) -> str:
    return os.path.relpath(path, os.getcwd())

  def _probabilities(self, learner, variables, x) -> np.ndarray:
    """Mean predicted class probabilities ``[n, C]`` of the (ensemble) model, deterministic."""
    lp = learner.predict(variables, x).log_probs  # [M, 1, n, C]
    from dal_jax import acquisition as acq_lib
    lp = acq_lib.mean_log_probs(learner_lib.ensemble_log_probs(lp))
    return np.exp(np.asarray(lp, np.float64))

  def _write_query(self, qnum: int, rows) -> str:
    pool = self.pool
    os.makedirs(self._file("queries"), exist_ok=True)
    path = self._file("queries", f"query_{qnum:03d}.csv")
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "path", "rank", "score", "predicted", "probability", "label"])
    tasks = []
    for rank, (j, score, pred, prob) in enumerate(rows, 1):
      pred_name = self.classes[pred] if pred is not None else ""
      w.writerow([pool.ids[j], pool.paths[j], rank, "" if score is None else f"{score:.6f}",
                  pred_name, "" if prob is None else f"{prob:.6f}", ""])
      task = {"data": {"image": _data_uri(pool.x[j]), "item_id": pool.ids[j],
                       "path": pool.paths[j], "rank": rank, "query": qnum}}
      if pred is not None:
        task["predictions"] = [{"model_version": f"dal_jax query {qnum}", "score": prob,
                                "result": [{"from_name": "label", "to_name": "image",
                                            "type": "choices",
                                            "value": {"choices": [pred_name]}}]}]
      tasks.append(task)
    atomic_write(path, out.getvalue().encode())
    _write_json(path[:-4] + "_tasks.json", tasks)
    return path

  # ---- ingest

  def ingest(self, file: str) -> dict[str, Any]:
    """Reads answers (a CSV with ``id`` and ``label`` columns, or a Label Studio JSON export)
    and appends them to the label log. Everything is checked first: an unknown ID or class, a
    conflicting duplicate, an empty, non-UTF-8 or truncated file raises ``ValueError`` naming
    the row or task, and the log is left as it was. ``skip`` / ``unsure`` answers (and tasks
    skipped in Label Studio) send items back to the pool. Returns what changed."""
    answers = read_answers(file, self.classes, set(self.pool.ids))
    state_json = self._state()
    pending = state_json["pending"]
    pending_ids = set(pending["ids"]) if pending else set()
    current = self.labels()
    round_now = state_json["round"]
    acquired = round_now + 1 if pending and pending["round"] is not None else round_now
    events, summary = [], {"new": 0, "relabeled": 0, "unchanged": 0, "skipped": 0, "extra": 0}
    source = os.path.basename(file)
    for item_id, (answer, where) in answers.items():
      if answer is None:  # skip / unsure
        if item_id in pending_ids:
          events.append({"event": "skip", "id": item_id, "round": acquired, "source": source,
                         "time": _now()})
          summary["skipped"] += 1
        continue
      old = current.get(item_id)
      if old == answer:
        summary["unchanged"] += 1
        continue
      kind = "label" if old is None else "relabel"
      events.append({"event": kind, "id": item_id, "label": answer, "round": acquired,
                     "source": source, "time": _now(), **({"previous": old} if old else {})})
      summary["new" if old is None else "relabeled"] += 1
      if item_id not in pending_ids and old is None:
        summary["extra"] += 1
    answered = {e["id"] for e in events} | {i for i, (a, _) in answers.items()
                                            if a is not None and current.get(i) == a}
    still = [i for i in (pending["ids"] if pending else []) if i not in answered]
    if events:
      self._append_events(events)
    if pending:
      if still:
        pending["ids"] = still
      else:
        if pending["round"] is not None:
          self._finish_round(state_json, pending)
        state_json["pending"] = None
      _write_json(self._file("state.json"), state_json)
    summary["pending"] = len(still)
    self._say(f"{source}: {summary['new']} new labels ({summary['extra']} outside the pending "
              f"query), {summary['relabeled']} relabeled (history kept), {summary['skipped']} "
              f"skipped (back in the pool), {summary['unchanged']} unchanged; {len(still)} "
              "pending items unanswered")
    return summary

  def _finish_round(self, state_json, pending) -> None:
    """The pending model query is answered: hooks see the answers, the round advances."""
    model, method, _ = self._build()
    hooks = [h for h in method.hooks if h.after_answers is not None]
    if hooks:
      setup = loop_lib.make_setup(model, jnp.asarray(self.pool.x), len(self.classes), 10**9)
      state = self._loop_state(method, setup, state_json)
      labels = self.labels()
      index = {i: n for n, i in enumerate(self.pool.ids)}
      answered = [i for i in pending["all_ids"] if i in labels]
      idx = np.array([index[i] for i in answered], np.int64)
      ys = np.array([self.classes.index(labels[i]) for i in answered], np.int32)
      methods = dict(state.methods)
      for h in hooks:
        methods[h.name] = h.after_answers(methods[h.name], idx, ys)
      self._save_method_state(methods)
    state_json["round"] += 1

  # ---- status and export

  def status(self, *, folds: int = 5, plot: bool = True) -> dict[str, Any]:
    """Labeled count, class histogram, the pending query and a cross-validated accuracy
    estimate from the labels alone (``folds`` models on stacked folds); appends the estimate to
    the history and plots the learning curve (``status.png``)."""
    labels, state_json = self.labels(), self._state()
    hist = {c: 0 for c in self.classes}
    for c in labels.values():
      hist[c] += 1
    out = {"pool": len(self.pool.ids), "labeled": len(labels), "classes": hist,
           "round": state_json["round"],
           "pending": len(state_json["pending"]["ids"]) if state_json["pending"] else 0,
           "cv_accuracy": None}
    if len(labels) >= 2 * folds and sum(v > 0 for v in hist.values()) >= 2:
      out["cv_accuracy"] = self._cross_validate(labels, folds)
      history = [h for h in state_json.get("history", []) if h["labeled"] != len(labels)]
      state_json["history"] = history + [{"labeled": len(labels),
                                          "cv_accuracy": out["cv_accuracy"], "time": _now()}]
      _write_json(self._file("state.json"), state_json)
      if plot:
        out["plot"] = self._plot(state_json["history"])
    return out

  def _cross_validate(self, labels: dict[str, str], folds: int) -> float:
    learner = self._plain_learner()
    index = {i: n for n, i in enumerate(self.pool.ids)}
    ids = sorted(labels)
    x = jnp.asarray(self.pool.x[[index[i] for i in ids]])
    y = np.array([self.classes.index(labels[i]) for i in ids], np.int32)
    fold = np.asarray(jax.random.permutation(jax.random.key(0), len(ids))) % folds
    train = np.stack([fold != f for f in range(folds)])
    fit = learner.fit(x, jnp.asarray(y), jnp.asarray(train),
                      keys=jax.random.split(jax.random.key(1), folds))
    lp = learner.predict(fit.variables, x).log_probs  # [folds, 1, n, C]
    pred = np.asarray(jnp.argmax(lp[:, 0], -1))
    correct = sum(int((pred[f][fold == f] == y[fold == f]).sum()) for f in range(folds))
    return correct / len(ids)

  def _plot(self, history) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = self._file("status.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([h["labeled"] for h in history], [h["cv_accuracy"] for h in history], "o-")
    ax.set_xlabel("labeled items")
    ax.set_ylabel("cross-validated accuracy")
    ax.set_title("learning curve (estimate from the labels)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

  def export(self) -> str:
    """Trains on every label, saves the model (orbax, ``export/model``) with ``export.json``,
    and writes ``export/predictions.csv`` (every pool item's predicted class, its probability
    and its label if known). Load it back with :func:`load_model`. Returns the folder."""
    labels = self.labels()
    if not labels:
      raise ValueError("nothing is labeled yet: query and ingest first")
    learner = self._plain_learner()
    pool, index = self.pool, {i: n for n, i in enumerate(self.pool.ids)}
    y = np.full(len(pool.ids), -1, np.int32)
    for i, c in labels.items():
      y[index[i]] = self.classes.index(c)
    self._say(f"training the export model on {len(labels)} labels")
    x = jnp.asarray(pool.x)
    fit = learner.fit(x, jnp.asarray(y), jnp.asarray(y >= 0),
                      keys=jax.random.split(jax.random.key(int(self.config.seed)), 1))
    variables = learner_lib.index(fit.variables, 0)["model"]
    out = self._file("export")
    os.makedirs(out, exist_ok=True)
    save_model(os.path.join(out, "model"), variables)
    _write_json(os.path.join(out, "export.json"), {
        "model": self.config.model,
        "options": config_lib.plain(self.config.models.get(self.config.model, {})),
        "input_shape": list(pool.x.shape[1:]), "classes": self.classes,
        "labels": len(labels), "time": _now()})
    probs = self._probabilities(learner, fit.variables, x)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "path", "predicted", "probability", "label"])
    for j, p in enumerate(probs):
      w.writerow([pool.ids[j], pool.paths[j], self.classes[int(p.argmax())], f"{p.max():.6f}",
                  labels.get(pool.ids[j], "")])
    atomic_write(os.path.join(out, "predictions.csv"), buf.getvalue().encode())
    self._say(f"exported the model and {len(pool.ids)} predictions to {self._rel(out)}")
    return out

  def close(self) -> None:
    self.lock.release()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _data_uri(image: np.ndarray) -> str:
  """A PNG data URI of one ``[H, W, C]`` image in [0, 1] (Label Studio shows it as is)."""
  from PIL import Image

  arr = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def label_config(classes: list[str]) -> str:
  """A Label Studio labeling config for a project's tasks (one choice per class)."""
  choices = "\n".join(f'    <Choice value="{c}"/>' for c in classes)
  return ('<View>\n  <Image name="image" value="$image"/>\n'
          f'  <Choices name="label" toName="image" choice="single" showInline="true">\n'
          f"{choices}\n  </Choices>\n</View>\n")


# ---- reading answers


def read_answers(path: str, classes: list[str], ids: set[str]
                 ) -> dict[str, tuple[str | None, str]]:
  """``id -> (class or None for skip, where)`` from a CSV (``id``, ``label``) or a Label Studio
  JSON export; rows without an answer are ignored. Raises ``ValueError`` naming the file and the
  row / task for unknown IDs or classes, conflicting duplicates, or an unreadable file."""
  if not os.path.isfile(path):
    raise ValueError(f"answers file {path!r} does not exist")
  with open(path, "rb") as f:
    raw = f.read()
  if not raw.strip():
    raise ValueError(f"{path} is empty")
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
  if path.endswith(".json") or text.lstrip().startswith(("[", "{")):
    rows = _label_studio_rows(path, text)
  else:
    rows = _csv_rows(path, text)
  answers: dict[str, tuple[str | None, str]] = {}
  for where, item_id, answer in rows:
    if item_id not in ids:
      raise ValueError(f"{path}, {where}: unknown id {item_id!r} (not in the pool)")
    a = answer.strip() if answer is not None else ""
    if not a:
      continue
    value = None if a.lower() in SKIP_ANSWERS else a
    if value is not None and value not in classes:
      raise ValueError(f"{path}, {where}: unknown class {a!r}; classes: {', '.join(classes)} "
                       f"(or {'/'.join(SKIP_ANSWERS)} to skip)")
    if item_id in answers and answers[item_id][0] != value:
      raise ValueError(f"{path}, {where}: id {item_id!r} answered {value!r} here and "
                       f"{answers[item_id][0]!r} at {answers[item_id][1]}; keep one answer")
    answers.setdefault(item_id, (value, where))
  if not answers:
    raise ValueError(f"{path} holds no answers (fill in the label column)")
  return answers


def _csv_rows(path: str, text: str):
  reader = csv.DictReader(io.StringIO(text))
  if reader.fieldnames is None or not {"id", "label"} <= set(reader.fieldnames):
    raise ValueError(f"{path}: answers need 'id' and 'label' columns; got {reader.fieldnames}")
  for n, row in enumerate(reader, 2):
    if row["id"] is None or row.get("label", "") is None:
      raise ValueError(f"{path}, row {n}: too few columns")
    yield f"row {n}", row["id"], row["label"]


def _label_studio_rows(path: str, text: str):
  try:
    tasks = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                     "a truncated export?") from None
  if isinstance(tasks, dict):
    tasks = [tasks]
  if not isinstance(tasks, list):
    raise ValueError(f"{path}: a Label Studio export is a JSON list of tasks")
  for n, task in enumerate(tasks):
    where = f"task {task.get('id', n) if isinstance(task, dict) else n}"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict) or (
        "item_id" not in task["data"]):
      raise ValueError(f"{path}, {where}: no data.item_id (export tasks imported from a dal_jax "
                       "query_NNN_tasks.json)")
    item_id = str(task["data"]["item_id"])
    annotations = task.get("annotations") or []
    done = [a for a in annotations if not a.get("was_cancelled")]
    if not done:
      if annotations or task.get("skipped"):  # skipped / cancelled in Label Studio
        yield where, item_id, "skip"
      continue
    choices = set()
    for a in done:
      for r in a.get("result") or []:
        value = r.get("value") or {}
        for c in value.get("choices") or []:
          choices.add(c)
    if len(choices) > 1:
      raise ValueError(f"{path}, {where}: annotations disagree ({sorted(choices)}) on id "
                       f"{item_id!r}; resolve them in Label Studio first")
    yield where, item_id, (choices.pop() if choices else "skip")


# ---- creating, opening, exported models


def create(path: str, *, pool: str, classes: list[str], config_file: str | None = None,
           overrides: dict[str, Any] | None = None, image_size: tuple[int, int] = (28, 28),
           channels: int = 1, labels_from_folders: bool = False, cold_start: str = "random",
           data_dir: str | None = None, progress: bool = True) -> Project:
  """Creates a project directory (the config, the pool manifest, an empty label log) and opens
  it. Raises ``ValueError`` if ``path`` already holds a project."""
  path = os.path.abspath(path)
  if os.path.exists(os.path.join(path, "project.json")):
    raise ValueError(f"{path} already holds a project; open it instead")
  classes = [c.strip() for c in classes if c.strip()]
  if len(classes) < 2 or len(set(classes)) != len(classes):
    raise ValueError(f"classes must be >= 2 distinct names, got {classes}")
  bad = [c for c in classes if c.lower() in SKIP_ANSWERS]
  if bad:
    raise ValueError(f"{bad} are reserved answers (skip); choose other class names")
  if cold_start not in COLD_STARTS:
    raise ValueError(f"cold_start must be one of {COLD_STARTS}, got {cold_start!r}")
  config = make_config(config_file, overrides)
  loaded = pool_lib.load_pool(pool, image_size=tuple(image_size), channels=channels,
                              class_names=classes, labels_from_folders=labels_from_folders,
                              data_dir=data_dir, progress=progress)
  os.makedirs(path, exist_ok=True)
  lock = workdir_lib.WorkdirLock(path)
  try:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["position", "id", "path"])
    for n, (i, p) in enumerate(zip(loaded.ids, loaded.paths)):
      w.writerow([n, i, p])
    atomic_write(os.path.join(path, "pool.csv"), buf.getvalue().encode())
    events = [{"event": "label", "id": i, "label": c, "round": 0, "source": "pool",
               "time": _now()} for i, c in sorted(loaded.known.items())]
    atomic_write(os.path.join(path, "labels.jsonl"),
                 b"".join((json.dumps(e, sort_keys=True) + "\n").encode() for e in events))
    _write_json(os.path.join(path, "state.json"),
                {"round": 0, "queries": 0, "pending": None, "history": []})
    with open(os.path.join(path, "label_config.xml"), "w", encoding="utf-8") as f:
      f.write(label_config(classes))
    _write_json(os.path.join(path, "project.json"), {
        "version": PROJECT_VERSION, "classes": classes, "cold_start": cold_start,
        "created": _now(), "config": config_lib.resolved(config),
        "pool": {"source": os.path.abspath(pool), "image_size": list(image_size),
                 "channels": channels, "labels_from_folders": labels_from_folders,
                 "data_dir": data_dir, "items": len(loaded.ids),
                 "skipped": [p for p, _ in loaded.skipped]}})
  finally:
    lock.release()
  if progress:
    print(f"created {path}: {len(loaded.ids)} items ({len(loaded.known)} labeled), classes "
          f"{', '.join(classes)}" + (f"; {len(loaded.skipped)} undecodable images skipped"
                                     if loaded.skipped else ""), file=sys.stderr)
  return Project(path, progress=progress)


def open_project(path: str, *, progress: bool = True) -> Project:
  """Opens an existing project (refused while another process holds it)."""
  return Project(path, progress=progress)


def save_model(path: str, variables) -> None:
  """Saves one model's variables with orbax (overwriting an older export)."""
  import orbax.checkpoint as ocp

  leaves = {f"{i:04d}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(variables))}
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.abspath(path), leaves, force=True)


class ExportedModel:
  """An exported model: ``predict(images)`` -> ``(classes [n], probabilities [n, C])``;
  ``images`` are ``[n, H, W, C]`` floats in [0, 1] or image file paths (decoded as the pool)."""

  def __init__(self, export_dir: str):
    import orbax.checkpoint as ocp

    meta = _read_json(os.path.join(export_dir, "export.json"), "export.json")
    self.classes, self.input_shape = meta["classes"], tuple(meta["input_shape"])
    self.model = models_lib.get_model(meta["model"], self.input_shape, len(self.classes),
                                      **meta["options"])
    template = self.model.init(jax.random.key(0), None)
    with ocp.StandardCheckpointer() as ckpt:
      leaves = ckpt.restore(os.path.abspath(os.path.join(export_dir, "model")))
    self.variables = jax.tree.unflatten(jax.tree.structure(template),
                                        [jnp.asarray(leaves[k]) for k in sorted(leaves)])

  def predict(self, images) -> tuple[list[str], np.ndarray]:
    if len(images) and isinstance(images[0], str):
      h, w, c = self.input_shape
      images = np.stack([pool_lib.decode_image(p, (h, w), c) for p in images]) / 255.0
    x = jnp.asarray(images, jnp.float32)
    if x.shape[1:] != self.input_shape:
      raise ValueError(f"images must be shaped [n, {', '.join(map(str, self.input_shape))}], "
                       f"got {tuple(x.shape)}")
    logits, _ = self.model.apply(self.variables, x, train=False)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    return [self.classes[int(i)] for i in probs.argmax(-1)], probs


def load_model(path: str) -> ExportedModel:
  """The model a project exported (``path``: the project or its ``export`` folder)."""
  if os.path.exists(os.path.join(path, "export", "export.json")):
    path = os.path.join(path, "export")
  return ExportedModel(path)
