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

  PROJECT/project.db        the project's state, one SQLite database: classes, config, pool
                            source and items (with content digests), the label log, completed
                            rounds, the pending query, status history, the method's state
  PROJECT/label_config.xml  the Label Studio labeling config
  PROJECT/queries/          query_NNN.csv and query_NNN_tasks.json (Label Studio import)
  PROJECT/export/           the exported model, every pool item's prediction, the label log

Nothing labeled is ever lost: every command commits its changes to the database in one
transaction (a crash or kill leaves the state before the command or after it, never a mix);
every answer is checked before anything is written; the label log is append-only and the
labeled set is rebuilt from it (the last answer per item wins, earlier ones stay as its
history; ``skip`` on a labeled item withdraws its label); ingesting a file twice adds nothing;
a second process on the project is refused (``.lock``), and so is a second ``init``. The pool
may change between commands: new files join, removed ones leave with their labels kept in the
history, and an item whose content changed loses its label with a note. Projects of the
earlier five-file layout (version 1) are migrated on first open, nothing lost.

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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dal_jax import _project_store as store_lib
from dal_jax import config as config_lib
from dal_jax import learner as learner_lib
from dal_jax import loop as loop_lib
from dal_jax import models as models_lib
from dal_jax import pool as pool_lib
from dal_jax import streaming
from dal_jax import training
from dal_jax import workdir as workdir_lib

SKIP_ANSWERS = ("skip", "unsure", "?")
LABEL_CONTROL = "label"  # the name of the class choice in Label Studio configs and answer CSVs
COLD_STARTS = loop_lib.COLD_STARTS
_PROJECT_DEFAULTS = {"model": "mlp", "acquisition": "entropy", "mc_samples": 0,
                     "pool_subsample": 0, "val_size": 0}


def _device(x):
  """A pool's inputs for the loop: a view of the decoded images stays on disk (read by index and
  in chunks); an array goes to the device."""
  return x if streaming.is_rows(x) else jnp.asarray(x)


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


def make_config(config_file: str | None = None, overrides: dict[str, Any] | None = None, *,
                defaults: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The run config of a project: ``default_config()`` with the project defaults (``defaults``,
  else those of a classification project: a small MLP, entropy, no validation split), a config
  file's ``get_config()`` and ``field=value`` overrides."""
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
    for k, v in (_PROJECT_DEFAULTS if defaults is None else defaults).items():
      *parents, leaf = k.split(".")
      node = config
      for p in parents:
        node = node[p]
      node[leaf] = v
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

  def __init__(self, path: str, *, progress: bool = True, lock=None):
    self.path = os.path.abspath(path)
    has_db = os.path.exists(self._file(store_lib.DB_FILE))
    if not has_db and not os.path.exists(self._file("project.json")):
      raise ValueError(f"{self.path} is not a dal_jax project (no {store_lib.DB_FILE}); create "
                       "one with `dal-jax init`")
    self.lock = lock or workdir_lib.WorkdirLock(self.path, what="project")
    self.progress = progress
    try:
      if not os.path.exists(self._file(store_lib.DB_FILE)):
        _migrate_v1(self.path, self._say)
      self.db = store_lib.Store(self.path)
      meta = self.db.meta()
      for key in ("classes", "config", "pool", "round", "queries", "pending"):
        if key not in meta:
          raise ValueError(f"{self.db.path} has no {key!r}; restore the project folder from a "
                           "backup")
    except BaseException:
      self.lock.release()
      raise
    self.classes: list[str] = meta["classes"]
    self.config = ml_collections.ConfigDict(meta["config"])
    self._pool = None
    task = meta.get("task", "classification")
    if task not in PROJECT_KINDS:
      self.close()
      raise ValueError(f"{self.path}: a {task!r} project; this dal_jax opens "
                       f"{', '.join(sorted(PROJECT_KINDS))} projects")
    self.__class__ = PROJECT_KINDS[task].project  # the task's answers, queries and reports

  # ---- files and state

  def _file(self, *parts: str) -> str:
    return os.path.join(self.path, *parts)

  def _say(self, msg: str) -> None:
    if self.progress:
      print(msg, file=sys.stderr, flush=True)

  @property
  def meta(self) -> dict[str, Any]:
    """The project's settings and state as committed (classes, config, pool, round, queries,
    pending, history, pool_changes)."""
    return self.db.meta()

  @property
  def pool(self) -> pool_lib.Pool:
    """The decoded pool. When its files changed since the last use, the project follows: new
    files join, removed ones leave (their labels end, the history keeps them) and an item whose
    content changed loses its label with a note (:meth:`_sync_pool`)."""
    if self._pool is None:
      p = self.meta["pool"]
      pool = pool_lib.load_pool(p["source"], image_size=tuple(p["image_size"]),
                                channels=p["channels"], class_names=self.classes,
                                labels_from_folders=p["labels_from_folders"],
                                data_dir=p.get("data_dir"), progress=self.progress)
      self._sync_pool(pool)
      self._pool = pool
    return self._pool

  def _sync_pool(self, pool: pool_lib.Pool) -> None:
    stored = self.db.items()
    current = list(zip(pool.ids, pool.paths, pool.digests))
    if [(i, d) for i, _, d in stored] == [(i, d) for i, _, d in current]:
      if [p for _, p, _ in stored] != pool.paths:  # the project's pool folder moved
        self.db.commit(items=current)
      return
    old = {i: d for i, _, d in stored}
    now = dict(zip(pool.ids, pool.digests))
    joined = [i for i in pool.ids if i not in old]
    left = [i for i in old if i not in now]
    changed = [i for i in pool.ids if i in old and old[i] and old[i] != now[i]]
    labels, time_ = self.labels(), _now()
    events = [{"event": "withdraw", "id": i, "previous": labels[i], "reason": why,
               "round": self.meta["round"], "source": "pool", "time": time_}
              for why, ids in (("left the pool", left), ("content changed", changed))
              for i in ids if i in labels]
    events += [{"event": "label", "id": i, "label": pool.known[i], "round": self.meta["round"],
                "source": "pool", "time": time_} for i in joined if i in pool.known]
    meta = self.meta
    change = {"time": time_, "joined": len(joined), "left": len(left), "changed": len(changed),
              "labels_withdrawn": sum(e["event"] == "withdraw" for e in events),
              "examples": {"joined": joined[:5], "left": left[:5], "changed": changed[:5]}}
    updates = {"pool_changes": meta.get("pool_changes", []) + [change]}
    pending = meta["pending"]
    if pending:
      gone = set(left) | set(changed)
      if gone & set(pending["ids"]):
        pending = dict(pending, ids=[i for i in pending["ids"] if i not in gone],
                       all_ids=[i for i in pending["all_ids"] if i not in gone])
        updates["pending"] = pending if pending["ids"] else None
        if not pending["ids"] and pending["round"] is not None:
          updates["round"] = meta["round"] + 1
    if any(change[k] for k in ("joined", "left", "changed")):
      # Items joining or leaving move pool positions, in which a method's state may index the
      # pool (DFAL's adversarial copies): it starts afresh.
      blobs = {"method_state": None} if joined or left else {}
      self.db.commit(meta=updates, events=events, items=current, blobs=blobs)
      self._say(f"the pool changed since the last use: {len(joined)} new items, {len(left)} "
                f"removed, {len(changed)} changed ({change['labels_withdrawn']} labels "
                "withdrawn, kept in the history)"
                + ("; the method's state starts afresh" if blobs else ""))
    else:  # digests first recorded (a project migrated from version 1)
      self.db.commit(items=current)

  def events(self) -> list[dict[str, Any]]:
    """The label log, oldest first (``label``, ``relabel``, ``skip`` and ``withdraw`` events)."""
    return self.db.events()

  def labels(self) -> dict[str, str]:
    """ID -> current class (the last answer of each item; a withdrawal ends its label; skips of
    unlabeled items leave labels as they are)."""
    current: dict[str, str] = {}
    for e in self.events():
      if e["event"] in ("label", "relabel"):
        current[e["id"]] = e["label"]
      elif e["event"] == "withdraw":
        current.pop(e["id"], None)
    return current

  def write_log(self, out) -> int:
    """Writes the label log as JSON lines to the text stream ``out``; returns the count."""
    events = self.events()
    for e in events:
      out.write(json.dumps(e, sort_keys=True) + "\n")
    return len(events)

  # ---- the loop pieces

  def _keys(self):
    init_key, run_key = jax.random.split(jax.random.key(int(self.config.seed)))
    return init_key, run_key

  def _build(self, config=None):
    from dal_jax import experiment

    config = config or self.config
    pool = self.pool
    model = experiment.model_for(config, pool.x.shape[1:], len(self.classes))
    method = experiment.build_method(config)
    return model, method, experiment.build_learner(config, model, method)

  def _plain_learner(self) -> learner_lib.Learner:
    """The config's model and training, without the method's loss terms (cross-validation and
    the exported model are plain supervised fits on the labels)."""
    from dal_jax import experiment

    model = experiment.model_for(self.config, self.pool.x.shape[1:], len(self.classes))
    return experiment.build_learner(self.config, model)

  def _setup(self, model):
    # A project's budget is its pool: nothing more can ever be labeled (methods size their
    # state by it, e.g. DFAL's slots for adversarial copies).
    return loop_lib.make_setup(model, self.pool.x, len(self.classes),
                               len(self.pool.ids))

  def _loop_state(self, method, setup, round_: int, *, fresh: bool = False
                  ) -> loop_lib.LoopState:
    pool, index = self.pool, {i: n for n, i in enumerate(self.pool.ids)}
    init_key, run_key = self._keys()
    n = len(pool.ids)
    labeled = np.zeros(n, bool)
    labels = np.full((n, *self._label_shape()), loop_lib.UNKNOWN, np.int32)
    acquired = np.full(n, -1, np.int32)
    for e in self.events():
      j = index.get(e["id"])
      if j is None:
        continue
      if e["event"] in ("label", "relabel"):
        if not labeled[j]:
          acquired[j] = e["round"]
        labeled[j], labels[j] = True, self._label_value(e["label"])
      elif e["event"] == "withdraw":
        labeled[j], labels[j], acquired[j] = False, loop_lib.UNKNOWN, -1
    template = loop_lib.init_method_state(method, init_key, setup)
    methods = template
    blob = None if fresh else self.db.blob("method_state")
    if blob is not None:
      with np.load(io.BytesIO(blob)) as z:
        leaves = [z[f"a{i}"] for i in range(len(z.files))]
      want = [(np.shape(t), np.asarray(t).dtype) for t in workdir_lib.to_leaves(template)]
      if [(v.shape, v.dtype) for v in leaves] == want:
        methods = workdir_lib.from_leaves(template, leaves)
      else:
        self._say("the method's stored state does not fit the pool as it is now (the pool "
                  "changed): it starts afresh")
    return loop_lib.LoopState(
        labeled=jnp.asarray(labeled), labels=jnp.asarray(labels),
        acquired_round=jnp.asarray(acquired), round=jnp.int32(round_),
        key=run_key, done=jnp.array(False), methods=methods)

  def _label_shape(self) -> tuple[int, ...]:
    """One item's label shape in the loop state (a class: ``()``)."""
    return ()

  def _label_value(self, label: str):
    """The loop state's label of a label-log answer (a class name -> its index)."""
    return self.classes.index(label)

  @staticmethod
  def _method_blob(methods) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{f"a{i}": np.asarray(v) for i, v in
                     enumerate(workdir_lib.to_leaves(methods))})
    return buf.getvalue()

  # ---- query

  def query(self, k: int | None = None, *, acquisition: str | None = None) -> str:
    """Selects the next ``k`` items to label and writes ``queries/query_NNN.csv`` (id, path,
    rank, score, predicted class and its probability, an empty ``label`` column for the
    annotator) and ``query_NNN_tasks.json`` (Label Studio tasks with the model's prediction
    as a pre-annotation). Without labels yet, the cold start picks them (``cold_start`` of
    the project: random, or k-means / core-set / TypiClust / ProbCover on the inputs).

    The pending query, the method's advanced state and a new ``acquisition`` are committed
    together at the end: an interrupted query changes nothing, and running it again selects
    the same items. Returns the CSV path."""
    meta = self.meta
    if meta["pending"]:
      p = meta["pending"]
      raise ValueError(f"query {p['query']:03d} ({self._rel(self._file(p['file']))}) is still "
                       f"pending: {len(p['ids'])} items unanswered; ingest the answers first "
                       "(mark items you cannot label as 'skip')")
    config, switched = self.config, False
    if acquisition and acquisition != self.config.acquisition:
      config, switched = self._with_acquisition(acquisition), True
    pool = self.pool
    labels = self.labels()
    k = int(config.query_size if k is None else k)
    n_unlabeled = len(pool.ids) - len(labels)
    if not 1 <= k <= n_unlabeled and not (labels and config.region_size):
      raise ValueError(f"-k {k} is not allowed: expected 1 <= k <= {n_unlabeled} (the unlabeled "
                       "items left)")
    qnum = meta["queries"] + 1
    init_key, _ = self._keys()
    model, method, learner = self._build(config)
    updates: dict[str, Any] = {}
    blobs: dict[str, bytes | None] = {}
    if switched:
      updates["config"] = config_lib.resolved(config)
      blobs["method_state"] = None  # the old method's state does not carry over
    if not labels:
      cold = meta.get("cold_start", "random")
      self._say(f"no labels yet: cold start ({cold}) picks {k} of {len(pool.ids)} items")
      chosen = loop_lib.cold_start_indices(init_key, cold, pool.x, k,
                                           subsample=config.pool_subsample)
      rows = [(int(j), None, None, None) for j in chosen]
      round_ = None
    else:
      state = self._loop_state(method, self._setup(model), meta["round"], fresh=switched)
      from dal_jax import experiment
      rc = experiment.round_config(config, query_size=k, budget=len(pool.ids),
                                   target_accuracy=None, warm_start=False)
      self._say(f"round {int(state.round)}: training on {len(labels)} labels, then scoring "
                f"{n_unlabeled} unlabeled items with {config.acquisition}")
      # Region queries score every pixel of the candidates in memory (not chunk by chunk).
      x_pool = (jnp.asarray(streaming.materialize(pool.x)) if config.region_size
                else _device(pool.x))
      data = loop_lib.LoopData(x_pool=x_pool,
                               segments=experiment.pool_superpixels(config, pool.x))
      (state,), (q,), variables = loop_lib.propose(
          [state], method=method, learner=learner, data=data, config=rc,
          num_classes=len(self.classes))
      if q.stop is not None:
        raise ValueError(f"the run stops: {q.stop} (nothing selected)")
      blobs["method_state"] = self._method_blob(state.methods)
      rows = self._query_rows(learner, variables, data.x_pool, q)
      round_ = int(state.round)
      self._say(f"trained {q.metrics['train_steps']} steps ({q.metrics['time_train']:.1f}s), "
                f"selected {k} ({q.metrics['time_score'] + q.metrics['time_select']:.1f}s)")
    csv_path = self._write_query(qnum, rows)
    ids = list(dict.fromkeys(pool.ids[j] for j, *_ in rows))  # (a region query repeats images)
    updates.update(queries=qnum, pending={
        "query": qnum, "round": round_, "file": os.path.relpath(csv_path, self.path),
        "ids": ids, "all_ids": ids, **self._pending_regions(rows)})
    self.db.commit(meta=updates, blobs=blobs)
    if switched:
      self.config = config
      self._say(f"acquisition is now {acquisition} (stored in the project)")
    self._say(f"wrote {self._rel(csv_path)} and {self._rel(csv_path[:-4] + '_tasks.json')}")
    return csv_path

  def _pending_regions(self, rows) -> dict[str, Any]:
    """What the pending query records about regions besides its items (nothing for classes)."""
    return {}

  def _query_rows(self, learner, variables, x_pool, q) -> list[tuple]:
    """``(position, score, predicted class, its probability)`` of each queried item."""
    probs = self._probabilities(learner, variables, x_pool[np.asarray(q.indices)])
    scores = [None] * len(q.indices) if q.scores is None else [float(v) for v in q.scores]
    return [(int(j), score, int(p.argmax()), float(p.max()))
            for j, score, p in zip(q.indices, scores, probs)]

  def _with_acquisition(self, acquisition: str) -> ml_collections.ConfigDict:
    """The config with another acquisition (checked; stored by the query that uses it)."""
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.acquisition = acquisition
    if acquisition not in config.methods:
      defaults = config_lib.default_config().methods
      if acquisition in defaults:
        config.methods[acquisition] = defaults[acquisition]
    config_lib.check(config)
    from dal_jax import experiment
    experiment.build_method(config)  # unknown names and bad options fail here, before any write
    return config

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
      task = {"data": {"image": _data_uri(streaming.materialize(pool.x[j])),
                       "item_id": pool.ids[j],
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
    """Reads answers (a CSV with ``id`` and ``label`` columns, or a Label Studio JSON or CSV
    export) and appends them to the label log. Everything is checked first: an unknown ID or
    class, a conflicting duplicate, an empty, non-UTF-8 or truncated file raises ``ValueError``
    naming the row or task, and nothing changes. ``skip`` / ``unsure`` answers (and tasks
    skipped in Label Studio) send pending items back to the pool and withdraw the label of an
    item labeled before (the history keeps it). The events, the round and the method's state
    commit in one transaction. Returns what changed."""
    answers, answer_blobs = self._read_answers(file)
    meta = self.meta
    pending = meta["pending"]
    pending_ids = set(pending["ids"]) if pending else set()
    current = self.labels()
    round_now = meta["round"]
    acquired = round_now + 1 if pending and pending["round"] is not None else round_now
    events = []
    summary = {"new": 0, "relabeled": 0, "unchanged": 0, "skipped": 0, "withdrawn": 0,
               "extra": 0}
    source = os.path.basename(file)
    for item_id, (answer, where) in answers.items():
      old = current.get(item_id)
      if answer is None:  # skip / unsure
        if old is not None:
          events.append({"event": "withdraw", "id": item_id, "previous": old, "round": acquired,
                         "reason": "skipped by the annotator", "source": source,
                         "time": _now()})
          summary["withdrawn"] += 1
        elif item_id in pending_ids:
          events.append({"event": "skip", "id": item_id, "round": acquired, "source": source,
                         "time": _now()})
          summary["skipped"] += 1
        else:
          summary["unchanged"] += 1
        continue
      if old == answer:
        summary["unchanged"] += 1
        continue
      kind = "label" if old is None else "relabel"
      events.append({"event": kind, "id": item_id, "label": answer, "round": acquired,
                     "source": source, "time": _now(), **({"previous": old} if old else {})})
      summary["new" if old is None else "relabeled"] += 1
      if item_id not in pending_ids and old is None:
        summary["extra"] += 1
    answered = set(answers)
    still = [i for i in (pending["ids"] if pending else []) if i not in answered]
    updates: dict[str, Any] = {}
    blobs: dict[str, bytes] = {}
    if pending:
      if still:
        updates["pending"] = dict(pending, ids=still)
      else:
        if pending["round"] is not None:
          after = dict(current)
          for e in events:
            if e["event"] in ("label", "relabel"):
              after[e["id"]] = e["label"]
            elif e["event"] == "withdraw":
              after.pop(e["id"], None)
          blob = self._after_answers(pending, after, events)
          if blob is not None:
            blobs["method_state"] = blob
          updates["round"] = round_now + 1
        updates["pending"] = None
    used = {e["label"] for e in events if "label" in e}
    blobs.update({k: v for k, v in answer_blobs.items() if k in used})
    if events or updates:
      self.db.commit(meta=updates, events=events, blobs=blobs)
    summary["pending"] = len(still)
    self._say(f"{source}: {summary['new']} new labels ({summary['extra']} outside the pending "
              f"query), {summary['relabeled']} relabeled (history kept), {summary['skipped']} "
              f"skipped (back in the pool), {summary['withdrawn']} withdrawn, "
              f"{summary['unchanged']} unchanged; {len(still)} pending items unanswered")
    return summary

  def _read_answers(self, file: str) -> tuple[dict[str, tuple[str | None, str]], dict]:
    """``(id -> (answer or None for skip, where), blobs)``: the answers of ``file`` as label-log
    values, and data they refer to (none for classes)."""
    return read_answers(file, self.classes, set(self.pool.ids)), {}

  def _after_answers(self, pending, labels: dict[str, str], events) -> bytes | None:
    """The method's state once the pending model query is answered, through the loop's own
    second half (:func:`dal_jax.loop.incorporate`: its hooks see the answers), or None for
    methods without such hooks."""
    model, method, _ = self._build()
    if not any(h.after_answers is not None for h in method.hooks):
      return None
    state = self._loop_state(method, self._setup(model), self.meta["round"])
    index = {i: n for n, i in enumerate(self.pool.ids)}
    answered = [i for i in pending["all_ids"] if i in labels]
    idx = np.array([index[i] for i in answered], np.int64)
    ys = np.asarray([self._label_value(labels[i]) for i in answered], np.int32).reshape(
        len(answered), *self._label_shape())
    # Items of this query answered by an earlier ingest are in the state already: they join
    # with the rest, as the query's answers.
    state = state.replace(labeled=state.labeled.at[idx].set(False))
    query = loop_lib.Query(round=int(state.round), indices=idx, stop=None, metrics={})
    state = loop_lib.incorporate(state, query, ys, method=method, num_classes=len(self.classes))
    return self._method_blob(state.methods)

  # ---- status and export

  def status(self, *, folds: int = 5, plot: bool = True) -> dict[str, Any]:
    """Labeled count, class histogram, the pending query, what changed in the pool, and a
    cross-validated accuracy estimate from the labels alone (``folds`` models on stacked
    folds); appends the estimate to the history and plots the learning curve
    (``status.png``)."""
    pool = self.pool
    labels, meta = self.labels(), self.meta
    hist = {c: 0 for c in self.classes}
    for c in labels.values():
      hist[c] += 1
    changes = meta.get("pool_changes", [])
    out = {"pool": len(pool.ids), "labeled": len(labels), "classes": hist,
           "round": meta["round"],
           "pending": len(meta["pending"]["ids"]) if meta["pending"] else 0,
           "skipped_files": len(pool.skipped),
           "pool_changes": changes[-1] if changes else None,
           "cv_accuracy": None}
    if len(labels) >= 2 * folds and sum(v > 0 for v in hist.values()) >= 2:
      out["cv_accuracy"] = self._cross_validate(labels, folds)
      history = [h for h in meta.get("history", []) if h["labeled"] != len(labels)]
      history += [{"labeled": len(labels), "cv_accuracy": out["cv_accuracy"], "time": _now()}]
      self.db.commit(meta={"history": history})
      if plot:
        out["plot"] = self._plot(history)
    return out

  def _cross_validate(self, labels: dict[str, str], folds: int) -> float:
    learner = self._plain_learner()
    index = {i: n for n, i in enumerate(self.pool.ids)}
    ids = sorted(labels)
    x = jnp.asarray(streaming.materialize(self.pool.x[np.array([index[i] for i in ids])]))
    y = np.array([self.classes.index(labels[i]) for i in ids], np.int32)
    fold = np.asarray(jax.random.permutation(jax.random.key(0), len(ids))) % folds
    train = np.stack([fold != f for f in range(folds)])
    fit = learner.fit(x, jnp.asarray(y), jnp.asarray(train),
                      keys=jax.random.split(jax.random.key(1), folds))
    lp = learner.predict(fit.variables, x).log_probs  # [folds, 1, n, C]
    pred = np.asarray(jnp.argmax(lp[:, 0], -1))
    correct = sum(int((pred[f][fold == f] == y[fold == f]).sum()) for f in range(folds))
    return correct / len(ids)

  def _plot(self, history, *, ylabel: str = "cross-validated accuracy") -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = self._file("status.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([h["labeled"] for h in history], [h["cv_accuracy"] for h in history], "o-")
    ax.set_xlabel("labeled items")
    ax.set_ylabel(ylabel)
    ax.set_title("learning curve (estimate from the labels)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

  def _export_model(self, positions, labels, what: str):
    """Trains the config's plain model on the labeled items (``positions``, their ``labels``)
    and saves it with ``export.json`` in ``export/``: ``(learner, fit, folder)``. The dense
    tasks' exports share it."""
    pool = self.pool
    learner = self._plain_learner()
    self._say(f"training the export model on {len(positions)} {what}")
    fit = learner.fit(jnp.asarray(streaming.materialize(pool.x[positions])),
                      jnp.asarray(labels), jnp.ones(len(positions), bool),
                      keys=jax.random.split(jax.random.key(int(self.config.seed)), 1))
    out = self._file("export")
    os.makedirs(out, exist_ok=True)
    save_model(os.path.join(out, "model"), learner_lib.index(fit.variables, 0)["model"])
    _write_json(os.path.join(out, "export.json"), {
        "task": self.meta.get("task", "classification"), "model": self.config.model,
        "options": config_lib.plain(self.config.models.get(self.config.model, {})),
        "input_shape": list(pool.x.shape[1:]), "classes": self.classes,
        "labels": len(positions), "time": _now()})
    return learner, fit, out

  def export(self) -> str:
    """Trains on every label, saves the model (orbax, ``export/model``) with ``export.json``,
    writes ``export/predictions.csv`` (every pool item's predicted class, its probability
    and its label if known) and ``export/labels.jsonl`` (the label log, readable). Load it
    back with :func:`load_model`. Returns the folder."""
    labels = self.labels()
    if not labels:
      raise ValueError("nothing is labeled yet: query and ingest first")
    learner = self._plain_learner()
    pool, index = self.pool, {i: n for n, i in enumerate(self.pool.ids)}
    y = np.full(len(pool.ids), -1, np.int32)
    for i, c in labels.items():
      y[index[i]] = self.classes.index(c)
    self._say(f"training the export model on {len(labels)} labels")
    have = np.nonzero(y >= 0)[0]  # the labeled items alone are read
    fit = learner.fit(jnp.asarray(streaming.materialize(pool.x[have])), jnp.asarray(y[have]),
                      jnp.ones(len(have), bool),
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
    probs = self._probabilities(learner, fit.variables, _device(pool.x))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "path", "predicted", "probability", "label"])
    for j, p in enumerate(probs):
      w.writerow([pool.ids[j], pool.paths[j], self.classes[int(p.argmax())], f"{p.max():.6f}",
                  labels.get(pool.ids[j], "")])
    atomic_write(os.path.join(out, "predictions.csv"), buf.getvalue().encode())
    log = io.StringIO()
    self.write_log(log)
    atomic_write(os.path.join(out, "labels.jsonl"), log.getvalue().encode())
    self._say(f"exported the model and {len(pool.ids)} predictions to {self._rel(out)}")
    return out

  def close(self) -> None:
    self.db.close()
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
  from xml.sax.saxutils import quoteattr

  choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
  return (f'<View>\n  <Image name="image" value="$image"/>\n'
          f'  <Choices name="{LABEL_CONTROL}" toName="image" choice="single" showInline="true">\n'
          f"{choices}\n  </Choices>\n</View>\n")


# ---- reading answers


def read_answers(path: str, classes: list[str], ids: set[str]
                 ) -> dict[str, tuple[str | None, str]]:
  """``id -> (class or None for skip, where)`` from a CSV (``id``, ``label``), a Label Studio
  CSV export (``item_id``, ``label``) or a Label Studio JSON export; rows without an answer are
  ignored. Raises ``ValueError`` naming the file and the row / task for unknown IDs or classes,
  conflicting duplicates, or an unreadable file."""
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


# Columns of Label Studio's CSV export besides the task's data and the control's answer.
_LABEL_STUDIO_CSV = {"annotation_id", "annotator", "created_at", "updated_at", "lead_time"}


def _csv_rows(path: str, text: str):
  """``(where, id, answer)`` per row. The item's ID is the ``item_id`` column where there is
  one (Label Studio's CSV export: its ``id`` column is Label Studio's task number), else
  ``id``."""
  reader = csv.DictReader(io.StringIO(text))
  fields = set(reader.fieldnames or [])
  id_col = "item_id" if "item_id" in fields else "id"
  if id_col not in fields or LABEL_CONTROL not in fields:
    raise ValueError(f"{path}: answers need 'id' (or 'item_id') and 'label' columns; got "
                     f"{reader.fieldnames}")
  if id_col == "id" and fields & _LABEL_STUDIO_CSV:
    raise ValueError(f"{path}: a Label Studio CSV export without an 'item_id' column: its 'id' "
                     "column is Label Studio's task number, not the item's; import the tasks "
                     "from a dal_jax query_NNN_tasks.json, or export JSON")
  for n, row in enumerate(reader, 2):
    values = [v for k, v in row.items() if k is not None] + list(row.get(None) or [])
    if all(v is None or not str(v).strip() for v in values):
      continue  # an empty row (spreadsheets add ",,," rows)
    if row[id_col] is None or row.get(LABEL_CONTROL) is None:
      raise ValueError(f"{path}, row {n}: too few columns")
    yield f"row {n}", row[id_col], row[LABEL_CONTROL]


def label_studio_tasks(path: str, tasks, ids: set[str] | None = None):
  """``(where, item id, results)`` of each answered task of a Label Studio JSON export (parsed):
  ``results`` is the list of its annotations' result lists (cancelled annotations left out), or
  None for a task skipped or cancelled. Checks the export's shape (a list of tasks, each with a
  ``data.item_id``, annotations as objects, results as lists) and, with ``ids``, that every ID
  is a pool item answered once; raises one line naming the task."""
  if isinstance(tasks, dict):
    tasks = [tasks]
  if not isinstance(tasks, list):
    raise ValueError(f"{path}: a Label Studio export is a JSON list of tasks")
  seen: dict[str, str] = {}
  for n, task in enumerate(tasks):
    where = f"task {task.get('id', n) if isinstance(task, dict) else n}"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict) or (
        "item_id" not in task["data"]):
      raise ValueError(f"{path}, {where}: no data.item_id (export tasks imported from a dal_jax "
                       "query_NNN_tasks.json)")
    item_id = task["data"]["item_id"]
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
      raise ValueError(f"{path}, {where}: data.item_id must be a string, got "
                       f"{json.dumps(item_id)}")
    item_id = str(item_id)
    if ids is not None:
      if item_id not in ids:
        raise ValueError(f"{path}, {where}: unknown id {item_id!r} (not in the pool)")
      if item_id in seen:
        raise ValueError(f"{path}, {where}: id {item_id!r} is answered again (first at "
                         f"{seen[item_id]}); keep one task per image")
      seen[item_id] = where
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
      raise ValueError(f"{path}, {where}: 'annotations' must be a list of objects")
    done = [a for a in annotations if not a.get("was_cancelled")]
    if not done:
      if annotations or task.get("skipped"):  # skipped / cancelled in Label Studio
        yield where, item_id, None
      continue
    results = [a.get("result") or [] for a in done]
    if not all(isinstance(r, list) for r in results):
      raise ValueError(f"{path}, {where}: an annotation's 'result' must be a list")
    yield where, item_id, results


def _label_studio_rows(path: str, text: str):
  try:
    tasks = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                     "a truncated export?") from None
  for where, item_id, answered in label_studio_tasks(path, tasks):
    if answered is None:
      yield where, item_id, "skip"
      continue
    choices = set()
    for results in answered:
      for r in results:
        if not isinstance(r, dict):
          raise ValueError(f"{path}, {where}: an annotation result must be an object")
        if r.get("from_name", LABEL_CONTROL) != LABEL_CONTROL:
          continue  # another control of the labeling config (a quality flag, a comment)
        value = r.get("value") or {}
        picked = value.get("choices") if isinstance(value, dict) else None
        if picked is not None and (not isinstance(picked, list) or not all(
            isinstance(c, str) for c in picked)):
          raise ValueError(f"{path}, {where}: value.choices must be a list of class names")
        choices.update(picked or [])
    if len(choices) > 1:
      raise ValueError(f"{path}, {where}: annotations disagree ({sorted(choices)}) on id "
                       f"{item_id!r}; resolve them in Label Studio first")
    yield where, item_id, (choices.pop() if choices else "skip")


# ---- creating, opening, migrating, exported models


def create(path: str, *, pool: str, classes: list[str], config_file: str | None = None,
           overrides: dict[str, Any] | None = None, image_size: tuple[int, int] = (28, 28),
           channels: int = 1, labels_from_folders: bool = False, cold_start: str = "random",
           data_dir: str | None = None, task: str = "classification",
           progress: bool = True) -> Project:
  """Creates a project directory (the config, the pool's items, an empty label log) and opens
  it. Raises ``ValueError`` if ``path`` already holds a project or another process is creating
  or using one there (the lock is taken before anything is checked or written)."""
  path = os.path.abspath(path)
  if task not in PROJECT_KINDS:
    raise ValueError(f"unknown project task {task!r}; valid: {', '.join(sorted(PROJECT_KINDS))}")
  kind = PROJECT_KINDS[task]
  if labels_from_folders and not kind.labels_from_folders:
    raise ValueError(f"a {task} project's labels are not folder names: leave out "
                     "--labels-from-folders")
  classes = [c.strip() for c in classes if c.strip()]
  if len(classes) < 2 or len(set(classes)) != len(classes):
    raise ValueError(f"classes must be >= 2 distinct names, got {classes}")
  bad = [c for c in classes if c.lower() in SKIP_ANSWERS]
  if bad:
    raise ValueError(f"{bad} are reserved answers (skip); choose other class names")
  if cold_start not in COLD_STARTS:
    raise ValueError(f"cold_start must be one of {COLD_STARTS}, got {cold_start!r}")
  if os.path.exists(os.path.join(path, store_lib.DB_FILE)) or os.path.exists(
      os.path.join(path, "project.json")):
    raise ValueError(f"{path} already holds a project; open it instead")
  config = make_config(config_file, {**kind.overrides, **(overrides or {})},
                       defaults={**_PROJECT_DEFAULTS, **kind.overrides})
  os.makedirs(path, exist_ok=True)
  lock = workdir_lib.WorkdirLock(path, what="project")
  try:
    if os.path.exists(os.path.join(path, store_lib.DB_FILE)) or os.path.exists(
        os.path.join(path, "project.json")):  # made by another `init` while this one started
      raise ValueError(f"{path} already holds a project; open it instead")
    loaded = pool_lib.load_pool(pool, image_size=tuple(image_size), channels=channels,
                                class_names=classes, labels_from_folders=labels_from_folders,
                                data_dir=data_dir, progress=progress)
    with open(os.path.join(path, "label_config.xml"), "w", encoding="utf-8") as f:
      f.write(kind.label_config(classes))
    events = [{"event": "label", "id": i, "label": c, "round": 0, "source": "pool",
               "time": _now()} for i, c in sorted(loaded.known.items())]
    store_lib.create(path, meta={
        "task": task, "classes": classes, "cold_start": cold_start, "created": _now(),
        "config": config_lib.resolved(config),
        "pool": {"source": os.path.abspath(pool), "image_size": list(image_size),
                 "channels": channels, "labels_from_folders": labels_from_folders,
                 "data_dir": data_dir},
        "round": 0, "queries": 0, "pending": None, "history": [], "pool_changes": []},
        items=list(zip(loaded.ids, loaded.paths, loaded.digests)), events=events)
    if progress:
      print(f"created {path}: {len(loaded.ids)} items ({len(loaded.known)} labeled), classes "
            f"{', '.join(classes)}" + (f"; {len(loaded.skipped)} files skipped"
                                       if loaded.skipped else ""), file=sys.stderr)
    return Project(path, progress=progress, lock=lock)
  except BaseException:
    lock.release()
    raise


def _migrate_v1(path: str, say) -> None:
  """Moves a version-1 project (``project.json``, ``state.json``, ``labels.jsonl``,
  ``pool.csv``, ``method_state.npz``) into ``project.db``. Every file is checked first, and the
  files are cross-checked (a log that lacks the rounds ``state.json`` has completed is
  refused); the old files move to ``PROJECT/v1/`` once the database is in place."""
  def file(name):
    return os.path.join(path, name)

  meta = _read_json(file("project.json"), "project.json")
  if not isinstance(meta, dict) or meta.get("version") != 1:
    raise ValueError(f"{file('project.json')}: not a dal_jax project of version 1 (version "
                     f"{meta.get('version') if isinstance(meta, dict) else None!r})")
  for key, kind in (("classes", list), ("config", dict), ("pool", dict)):
    if not isinstance(meta.get(key), kind):
      raise ValueError(f"{file('project.json')}: {key!r} must be a JSON {kind.__name__}")
  classes = meta["classes"]
  state = _read_json(file("state.json"), "state.json")
  if not isinstance(state, dict) or not all(isinstance(state.get(k), int) and state[k] >= 0
                                            for k in ("round", "queries")):
    raise ValueError(f"{file('state.json')}: needs integer 'round' and 'queries' >= 0")
  pending = state.get("pending")
  if pending is not None and not (isinstance(pending, dict) and isinstance(
      pending.get("ids"), list) and isinstance(pending.get("query"), int)):
    raise ValueError(f"{file('state.json')}: 'pending' must be null or a query with 'ids'")
  try:
    with open(file("pool.csv"), encoding="utf-8") as f:
      items = [(r["id"], r["path"], "") for r in csv.DictReader(f)]
  except (OSError, KeyError, UnicodeDecodeError, csv.Error) as e:
    raise ValueError(f"{file('pool.csv')} cannot be read ({type(e).__name__}: {e})") from None
  ids = {i for i, _, _ in items}
  events = []
  try:
    with open(file("labels.jsonl"), encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"{file('labels.jsonl')} cannot be read ({e})") from None
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      e = json.loads(line)
    except json.JSONDecodeError:
      raise ValueError(f"{file('labels.jsonl')}, line {n} is corrupt") from None
    ok = (isinstance(e, dict) and e.get("event") in ("label", "relabel", "skip")
          and e.get("id") in ids and isinstance(e.get("round"), int)
          and (e["event"] == "skip" or e.get("label") in classes))
    if not ok:
      raise ValueError(f"{file('labels.jsonl')}, line {n}: not a label event of this project "
                       "(event label/relabel/skip, a pool id, a round, a class)")
    events.append(e)
  last_round = max((e["round"] for e in events), default=0)
  if last_round < state["round"] or (state["queries"] > (1 if pending else 0) and not events):
    raise ValueError(f"{file('labels.jsonl')} holds answers up to round {last_round} but "
                     f"{file('state.json')} has completed round {state['round']} after "
                     f"{state['queries']} queries: the log was truncated or emptied; restore "
                     "labels.jsonl from a backup (nothing was changed)")
  blobs = {}
  if os.path.exists(file("method_state.npz")):
    with open(file("method_state.npz"), "rb") as f:
      blob = f.read()
    try:
      with np.load(io.BytesIO(blob)) as z:
        [z[k] for k in z.files]
    except Exception as e:  # zipfile / numpy raise several types for damaged archives
      raise ValueError(f"{file('method_state.npz')} is damaged ({type(e).__name__}); delete it "
                       "to start the method's state afresh") from None
    blobs["method_state"] = blob
  if pending is not None:
    pending = dict(pending, file=os.path.join("queries", os.path.basename(
        str(pending.get("file", "")))), all_ids=pending.get("all_ids", pending["ids"]))
  pool = {k: meta["pool"].get(k) for k in ("source", "image_size", "channels",
                                           "labels_from_folders", "data_dir")}
  store_lib.create(path, meta={
      "classes": classes, "cold_start": meta.get("cold_start", "random"),
      "created": meta.get("created", _now()), "config": meta["config"], "pool": pool,
      "round": state["round"], "queries": state["queries"], "pending": pending,
      "history": state.get("history", []), "pool_changes": [],
      "migrated": {"from_version": 1, "time": _now()}}, items=items, events=events,
      blobs=blobs)
  os.makedirs(file("v1"), exist_ok=True)
  for name in ("project.json", "state.json", "labels.jsonl", "pool.csv", "method_state.npz"):
    if os.path.exists(file(name)):
      os.replace(file(name), os.path.join(path, "v1", name))
  say(f"migrated {path} to one database ({store_lib.DB_FILE}: {len(events)} label events, round "
      f"{state['round']}); the old files are in {file('v1')}")


def open_project(path: str, *, progress: bool = True) -> Project:
  """Opens an existing project (refused while another process holds it; a version-1 project is
  migrated first)."""
  return Project(path, progress=progress)


def save_model(path: str, variables) -> None:
  """Saves one model's variables with orbax (overwriting an older export)."""
  import orbax.checkpoint as ocp

  leaves = {f"{i:04d}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(variables))}
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.abspath(path), leaves, force=True)


class ExportedModel:
  """An exported model: ``predict(images)`` -> ``(classes [n], probabilities [n, C])`` (a
  segmentation project's: ``(class-index masks [n, H, W], probabilities [n, H, W, C])``; a
  detection project's: per image a list of ``{"class", "score", "box"}``);
  ``images`` are ``[n, H, W, C]`` floats in [0, 1] or image file paths (decoded as the pool)."""

  def __init__(self, export_dir: str):
    import orbax.checkpoint as ocp

    meta = _read_json(os.path.join(export_dir, "export.json"), "export.json")
    self.classes, self.input_shape = meta["classes"], tuple(meta["input_shape"])
    self.task = meta.get("task", "classification")
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
    kind = PROJECT_KINDS.get(self.task)
    if kind is not None and kind.predict is not None:
      return kind.predict(self, logits)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    if probs.ndim > 2:  # a class per pixel
      return probs.argmax(-1).astype(np.int32), probs
    return [self.classes[int(i)] for i in probs.argmax(-1)], probs


def load_model(path: str) -> ExportedModel:
  """The model a project exported (``path``: the project or its ``export`` folder)."""
  if os.path.exists(os.path.join(path, "export", "export.json")):
    path = os.path.join(path, "export")
  return ExportedModel(path)


class ProjectKind(NamedTuple):
  """What a project of one task needs: its :class:`Project` class (answers, queries, reports),
  its Label Studio labeling config, config fields it sets (the task and a model for it), and,
  when its model's outputs are not class scores, how an exported model's outputs become
  predictions."""

  project: type
  label_config: Any
  overrides: dict[str, Any]
  labels_from_folders: bool = False
  predict: Any = None  # predict(exported model, raw outputs) -> what load_model(...).predict gives


PROJECT_KINDS: dict[str, ProjectKind] = {
    "classification": ProjectKind(Project, label_config, {}, labels_from_folders=True)}

from dal_jax import box_project  # noqa: E402,F401  (registers the detection projects)
from dal_jax import mask_project  # noqa: E402,F401  (registers the segmentation projects)
