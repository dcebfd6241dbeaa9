"""Label your own data: pools of images / arrays / manifests, the project API and `dal-jax`."""

import csv
import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dal_jax import experiment
from dal_jax import learner as learner_lib
from dal_jax import loop
from dal_jax import pool as pool_lib
from dal_jax import project as project_lib
from dal_jax import tool
from dal_jax import training
from experiments import fashion_folder as fashion_folder_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = fashion_folder_lib.CLASSES
SETTINGS = ["--set", "train.max_steps=25", "--set", "acquisition=bald", "--set", "mc_samples=4",
            "--set", "seed=3"]


def fashion_folder(root, n=240):
  """``n`` Fashion-MNIST test images as PNG files in nested folders: ``(folder, truth)``."""
  truth = fashion_folder_lib.write_folder(str(root), n)
  return os.path.join(str(root), "images"), truth


def answer(query_csv, truth, out):
  """A scripted annotator: the true class of every queried id."""
  return fashion_folder_lib.answers_file(query_csv, truth, str(out))


def cli(*argv):
  assert tool.run(["--quiet", *map(str, argv)]) == 0


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp("pool")
  return fashion_folder(root / "photos")


def test_cli_rounds_reach_the_simulated_loops_labeled_set_and_accuracy(tmp_path, images):
  folder, truth = images
  proj = tmp_path / "proj"
  cli("init", proj, "--pool", folder, "--classes", ",".join(CLASSES), *SETTINGS,
      "--data-dir", tmp_path / "tfds")
  k0, k, rounds = 20, 10, 3
  for r in range(rounds + 1):
    with project_lib.open_project(str(proj), progress=False) as p:
      q = p.query(k0 if r == 0 else k)
    cli("ingest", proj, answer(q, truth, tmp_path / f"answers_{r}.csv"))
  # The same loop, simulated with the same seed and configuration.
  with project_lib.open_project(str(proj), progress=False) as p:
    config, pool, labels = p.config, p.pool, p.labels()
  y = np.array([CLASSES.index(truth[i]) for i in pool.ids])
  model = experiment.model_for(config, pool.x.shape[1:], 10)
  method = experiment.build_method(config)
  learner = learner_lib.Learner(model=model, config=training.TrainConfig(**config.train),
                                terms=method.loss_terms)
  init_key, run_key = jax.random.split(jax.random.key(3))
  first = loop.initial_indices(init_key, y, k0, balanced=False, num_classes=10)
  setup = loop.make_setup(model, jnp.asarray(pool.x), 10, 10**9)
  state = loop.init_loop_state(run_key, len(y), first, y[first],
                               methods=loop.init_method_state(method, init_key, setup))
  data = loop.LoopData(x_pool=jnp.asarray(pool.x))
  rc = loop.RoundConfig(query_size=k, mc_samples=4, budget=10**9)
  for _ in range(rounds):
    (state,), _, _ = loop.al_round([state], method=method, learner=learner, data=data,
                                   oracle=loop.simulated_oracle(y, 10), config=rc)
  simulated = {pool.ids[j] for j in np.nonzero(np.asarray(state.labeled))[0]}
  assert set(labels) == simulated and len(labels) == k0 + rounds * k
  # The query CSVs' score column is the acquisition's score (none for the random cold start).
  for qnum, filled in ((1, False), (2, True)):
    with open(proj / "queries" / f"query_{qnum:03d}.csv", encoding="utf-8") as f:
      col = [r["score"] for r in csv.DictReader(f)]
    assert all(bool(v) == filled for v in col) and len(col) == (k0 if qnum == 1 else k)
  assert all(truth[i] == c for i, c in labels.items())
  # The exported model is the simulated loop's model trained on the same labels.
  cli("export", proj)
  with open(proj / "export" / "predictions.csv", encoding="utf-8") as f:
    exported = [r["predicted"] for r in csv.DictReader(f)]
  lab = np.asarray(state.labeled)
  fit = learner.fit(data.x_pool, jnp.asarray(np.where(lab, y, -1)), jnp.asarray(lab),
                    keys=jax.random.split(jax.random.key(3), 1))
  sim_pred = np.asarray(jnp.argmax(learner.predict(fit.variables, data.x_pool).log_probs[0, 0], -1))
  acc_cli = np.mean([CLASSES.index(c) == t for c, t in zip(exported, y)])
  assert acc_cli == pytest.approx(np.mean(sim_pred == y), abs=1e-9) and acc_cli > 0.3
  # The exported model predicts image files through its helper.
  m = project_lib.load_model(str(proj))
  names, probs = m.predict([os.path.join(folder, pool.ids[0])])
  assert names == [exported[0]] and probs.shape == (1, 10)
  # status through the installed entry point (python -m dal_jax).
  out = subprocess.run([sys.executable, "-m", "dal_jax", "--quiet", "status", str(proj)],
                       capture_output=True, text=True, check=True, cwd=REPO)
  status = json.loads(out.stdout)
  assert status["labeled"] == 50 and sum(status["classes"].values()) == 50
  assert 0 <= status["cv_accuracy"] <= 1 and os.path.exists(status["plot"])


def _project(tmp_path, images, **kw):
  folder, truth = images
  p = project_lib.create(str(tmp_path / "p"), pool=folder, classes=CLASSES, progress=False,
                         overrides={"train.max_steps": 5, **kw},
                         data_dir=str(tmp_path / "tfds"))
  return p, truth


def _log(p):
  """Everything a project has committed: its log, settings and state, the method's state."""
  import sqlite3
  with sqlite3.connect(os.path.join(p.path, "project.db")) as db:
    return [list(db.execute(f"SELECT * FROM {t} ORDER BY 1")) for t in
            ("meta", "items", "events", "blobs")]


def _write(path, data):
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def test_bad_answer_files_are_refused_and_the_log_is_unchanged(tmp_path, images):
  p, truth = _project(tmp_path, images)
  q = p.query(5)
  good = answer(q, truth, tmp_path / "good.csv")
  p.ingest(good)
  q = p.query(4)
  before = _log(p)
  ids = list(csv.DictReader(open(q, encoding="utf-8")))
  first = ids[0]["id"]
  cases = {
      "unknown id": (b"id,label\nno/such.png,coat\n", r"row 2: unknown id 'no/such.png'"),
      "unknown class": (f"id,label\n{first},jacket\n".encode(), r"row 2: unknown class 'jacket'"),
      "conflict": (f"id,label\n{first},coat\n{first},bag\n".encode(),
                   rf"row 3: id '{first}' answered 'bag' here and 'coat' at row 2"),
      "empty": (b"", "is empty"),
      "not utf-8": (b"id,label\n\xff\xfe\xfa,coat\n", "not UTF-8"),
      "truncated json": (b'[{"id": 1, "data": {"item_id": "x"}, "annotations": [{"res',
                         "not valid JSON .*truncated export"),
      "no columns": (b"name,klass\na,b\n", r"need 'id' \(or 'item_id'\) and 'label' columns"),
  }
  for name, (content, match) in cases.items():
    path = _write(tmp_path / f"{name.replace(' ', '_')}.{'json' if 'json' in name else 'csv'}",
                  content)
    with pytest.raises(ValueError, match=match) as err:
      p.ingest(path)
    assert os.path.basename(path) in str(err.value) and "\n" not in str(err.value), name
    assert _log(p) == before, name
  p.close()


def test_ingest_is_idempotent_keeps_history_and_returns_skips_to_the_pool(tmp_path, images):
  p, truth = _project(tmp_path, images)
  q = p.query(6)
  rows = [r["id"] for r in csv.DictReader(open(q, encoding="utf-8"))]
  outside = next(i for i in truth if i not in rows)
  path = _write(tmp_path / "a.csv", (
      "id,label\n" + "".join(f"{i},{truth[i]}\n" for i in rows[:4])
      + f"{rows[4]},skip\n{rows[5]},\n{outside},{truth[outside]}\n").encode())
  s = p.ingest(path)
  assert s == {"new": 5, "extra": 1, "relabeled": 0, "skipped": 1, "unchanged": 0,
               "withdrawn": 0, "pending": 1}
  log = _log(p)
  assert p.ingest(path)["new"] == 0 and _log(p) == log  # the same file again: nothing changes
  # Relabeling keeps the old answer in the log; the current label is the new one.
  wrong = next(c for c in CLASSES if c != truth[rows[0]])
  p.ingest(_write(tmp_path / "b.csv", f"id,label\n{rows[0]},{wrong}\n{rows[5]},unsure\n".encode()))
  assert _log(p)[2][:len(log[2])] == log[2]  # appended, never rewritten
  history = [e for e in p.events() if e["id"] == rows[0]]
  assert [e["label"] for e in history] == [truth[rows[0]], wrong]
  assert p.labels()[rows[0]] == wrong
  assert rows[4] not in p.labels() and rows[5] not in p.labels()  # skipped: back in the pool
  assert p.status(plot=False)["pending"] == 0
  q2 = p.query(3)  # skipped items may be queried again; labeled ones never
  assert not set(r["id"] for r in csv.DictReader(open(q2, encoding="utf-8"))) & set(p.labels())
  p.close()


class _FailingDb:
  """A connection that fails at its ``n``-th statement (the write boundaries of a commit)."""

  def __init__(self, conn, n):
    self.conn, self.n = conn, n

  def execute(self, *args):
    self.n -= 1
    if self.n == 0:
      raise OSError("disk full (simulated)")
    return self.conn.execute(*args)

  def executemany(self, *args):
    return self.execute(*args) if self.n == 1 else self.conn.executemany(*args)

  def __getattr__(self, name):
    return getattr(self.conn, name)


def test_a_failure_at_any_write_of_ingest_or_query_leaves_the_previous_state(tmp_path, images):
  p, truth = _project(tmp_path, images, acquisition="dal", **{"methods.dal.steps": 5})
  p.ingest(answer(p.query(6), truth, tmp_path / "a.csv"))
  conn = p.db.conn
  before = _log(p)
  query = None
  for n in range(1, 30):  # fail each statement of the query's commit in turn
    p.db.conn = _FailingDb(conn, n)
    try:
      query = p.query(4)
      break
    except OSError:
      assert _log(p) == before, n
  assert n > 3 and query is not None  # the loop reached a commit that went through
  p.db.conn = conn
  first = open(query, encoding="utf-8").read()
  after_query = _log(p)
  assert after_query != before
  # The same query, had it been interrupted: the same batch from the same stored method state.
  p.db.commit(meta={"pending": None, "queries": 1}, blobs={"method_state": dict(before[3]).get(
      "method_state")})
  assert open(p.query(4), encoding="utf-8").read() == first
  ans = answer(query, truth, tmp_path / "b.csv")
  mid = _log(p)
  for n in range(1, 30):
    p.db.conn = _FailingDb(conn, n)
    try:
      p.ingest(ans)
      break
    except OSError:
      assert _log(p) == mid, n
  p.db.conn = conn
  assert p.meta["round"] == 1 and p.meta["pending"] is None and len(p.labels()) == 10
  p.close()


def test_a_second_process_on_the_project_is_refused(tmp_path, images):
  p, _ = _project(tmp_path, images)
  out = subprocess.run([sys.executable, "-m", "dal_jax", "status", p.path],
                       capture_output=True, text=True, cwd=REPO)
  assert out.returncode == 2 and "in use by another dal_jax process" in out.stderr
  p.close()
  with pytest.raises(ValueError, match="pending"):
    with project_lib.open_project(p.path, progress=False) as again:
      again.query(3)
      again.query(3)


def test_label_studio_export_is_ingested(tmp_path, images):
  p, truth = _project(tmp_path, images)
  q = p.query(4)
  tasks = json.load(open(q[:-4] + "_tasks.json", encoding="utf-8"))
  assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")
  export = []
  for n, t in enumerate(tasks):
    item = t["data"]["item_id"]
    ann = ([{"was_cancelled": True, "result": []}] if n == 3 else
           [{"was_cancelled": False, "result": [{"from_name": "label", "to_name": "image",
                                                 "type": "choices",
                                                 "value": {"choices": [truth[item]]}}]}])
    export.append({"id": 100 + n, "data": t["data"], "annotations": ann})
  path = tmp_path / "export.json"
  path.write_text(json.dumps(export))
  s = p.ingest(str(path))
  assert s["new"] == 3 and s["skipped"] == 1 and s["pending"] == 0
  export[0]["annotations"].append({"result": [{"value": {"choices": ["bag" if truth[
      tasks[0]["data"]["item_id"]] != "bag" else "coat"]}}]})
  path.write_text(json.dumps(export))
  with pytest.raises(ValueError, match="task 100: annotations disagree"):
    p.ingest(str(path))
  p.close()


@pytest.mark.parametrize("acquisition", ["badge", "batchbald", "dal", "coreset", "waal",
                                         "ensemble"])
def test_other_acquisitions_in_a_project(tmp_path, images, acquisition):
  extra = {"dal": {"methods.dal.steps": 10}, "waal": {"methods.waal.steps": 10},
           "ensemble": {"acquisition": "bald", "ensemble_size": 2}}.get(acquisition, {})
  p, truth = _project(tmp_path, images, **{"acquisition": acquisition, "mc_samples": 3, **extra})
  p.ingest(answer(p.query(10), truth, tmp_path / "a.csv"))
  q = p.query(5)
  rows = list(csv.DictReader(open(q, encoding="utf-8")))
  assert len({r["id"] for r in rows}) == 5 and not {r["id"] for r in rows} & set(p.labels())
  assert all(r["predicted"] in CLASSES and 0 < float(r["probability"]) <= 1 for r in rows)
  p.close()


def test_pool_sources_and_their_errors(tmp_path):
  rng = np.random.default_rng(0)
  # .npz with labels (-1: unlabeled) and ids.
  np.savez(tmp_path / "a.npz", x=rng.integers(0, 256, (6, 5, 4), dtype=np.uint8),
           y=np.array([0, -1, 1, -1, -1, 2]), ids=np.array([f"r{i}" for i in range(6)]))
  pool = pool_lib.load_pool(str(tmp_path / "a.npz"), class_names=["a", "b", "c"])
  assert pool.x.shape == (6, 5, 4, 1) and pool.known == {"r0": "a", "r2": "b", "r5": "c"}
  # A folder with class sub-folders, an undecodable image (skipped and named) and a manifest.
  root = tmp_path / "imgs"
  for c in ("cat", "dog"):
    (root / c).mkdir(parents=True)
    for i in range(2):
      Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
  (root / "loose.png").write_bytes(b"\x89PNG not really")
  pool = pool_lib.load_pool(str(root), image_size=(8, 8), channels=3, class_names=["cat", "dog"],
                            labels_from_folders=True, data_dir=str(tmp_path / "tfds"),
                            progress=False)
  assert pool.ids == ["cat/0.jpg", "cat/1.jpg", "dog/0.jpg", "dog/1.jpg"]
  assert pool.x.shape == (4, 8, 8, 3) and pool.known["dog/1.jpg"] == "dog"
  assert [os.path.basename(s) for s, _ in pool.skipped] == ["loose.png"]
  (tmp_path / "m.csv").write_text("id,path,label\nx1,imgs/cat/0.jpg,cat\nx2,imgs/dog/1.jpg,\n")
  pool = pool_lib.load_pool(str(tmp_path / "m.csv"), image_size=(8, 8),
                            class_names=["cat", "dog"], data_dir=str(tmp_path / "tfds"))
  assert pool.ids == ["x1", "x2"] and pool.known == {"x1": "cat"}
  # A changed file is decoded again (content key), not served from the cache.
  Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(root / "cat" / "0.jpg")
  again = pool_lib.load_pool(str(tmp_path / "m.csv"), image_size=(8, 8),
                             class_names=["cat", "dog"], data_dir=str(tmp_path / "tfds"))
  assert np.asarray(again.x[0]).max() == 0 and np.asarray(pool.x[0]).max() > 0
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="holds no images"):
    pool_lib.load_pool(str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="does not exist"):
    pool_lib.load_pool(str(tmp_path / "missing"))
  (tmp_path / "bad.csv").write_text("file\nx.png\n")
  with pytest.raises(ValueError, match="needs a 'path' column"):
    pool_lib.load_pool(str(tmp_path / "bad.csv"))


def test_switching_the_acquisition_is_stored_and_starts_a_fresh_method_state(tmp_path, images):
  p, truth = _project(tmp_path, images)
  p.ingest(answer(p.query(10), truth, tmp_path / "a.csv"))
  p.ingest(answer(p.query(4, acquisition="dal"), truth, tmp_path / "b.csv"))
  assert p.db.blob("method_state") is not None  # DAL's classifier
  p.close()
  with project_lib.open_project(p.path, progress=False) as again:
    assert again.config.acquisition == "dal"
    again.ingest(answer(again.query(4), truth, tmp_path / "c.csv"))  # still DAL, warm state
    with np.load(io.BytesIO(again.db.blob("method_state"))) as z:
      assert len(z.files) > 0
    again.query(4, acquisition="margin")
    with np.load(io.BytesIO(again.db.blob("method_state"))) as z:
      assert z.files == []  # margin's own (empty) state, not DAL's networks
    with pytest.raises(ValueError, match="unknown method 'nope'"):
      again._with_acquisition("nope")
    assert again.meta["config"]["acquisition"] == "margin"


def test_typiclust_cold_start_picks_the_first_query(tmp_path, images):
  folder, _ = images
  p = project_lib.create(str(tmp_path / "typ"), pool=folder, classes=CLASSES, progress=False,
                         overrides={"train.max_steps": 5}, data_dir=str(tmp_path / "tfds"),
                         cold_start="typiclust")
  with p:
    query = p.query(10)
    init_key, _ = p._keys()
    want = loop.cold_start_indices(init_key, "typiclust", p.pool.x, 10)
    ids = {p.pool.ids[j] for j in want}
  with open(query, encoding="utf-8") as f:
    assert {r["id"] for r in csv.DictReader(f)} == ids and len(ids) == 10
  with pytest.raises(ValueError, match="cold_start must be one of"):
    project_lib.create(str(tmp_path / "bad"), pool=folder, classes=CLASSES, progress=False,
                       data_dir=str(tmp_path / "tfds"), cold_start="bald")
