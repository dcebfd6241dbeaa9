"""Labels are never wrong, lost or stuck: project state committed as a whole, pools that change,
bad inputs refused in one line, Ctrl-C without a crash (issue 24)."""

import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dal_jax import acquisition as acq
from dal_jax import config as config_lib
from dal_jax import learner as learner_lib
from dal_jax import models as models_lib
from dal_jax import pool as pool_lib
from dal_jax import project as project_lib
from dal_jax import tool
from dal_jax import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
CLASSES = ["a", "b", "c"]
FAST = {"train.max_steps": 5, "train.eval_every": 5}


def npz_pool(path, n=40, seed=0):
  """``n`` random 8x8 images with class-dependent means: ``(path, truth by id)``."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, n)
  x = np.clip(rng.normal(0.2 + 0.3 * y[:, None, None], 0.1, (n, 8, 8)), 0, 1).astype(np.float32)
  np.savez(path, x=x)
  return str(path), {str(i): CLASSES[c] for i, c in enumerate(y)}


def make(tmp_path, pool, name="p", **overrides):
  return project_lib.create(str(tmp_path / name), pool=pool, classes=CLASSES, progress=False,
                            overrides={**FAST, **overrides}, image_size=(8, 8),
                            data_dir=str(tmp_path / "tfds"))


def answers(query_csv, truth, out, *, skip=()):
  with open(query_csv, encoding="utf-8") as f:
    ids = [r["id"] for r in csv.DictReader(f)]
  with open(out, "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "label"])
    for i in ids:
      w.writerow([i, "skip" if i in skip else truth[i]])
  return str(out)


def committed(p):
  """Everything a project has committed (its database's tables)."""
  with sqlite3.connect(os.path.join(p.path, "project.db")) as db:
    return [list(db.execute(f"SELECT * FROM {t} ORDER BY 1"))
            for t in ("meta", "items", "events", "blobs")]


def ids_of(query_csv):
  with open(query_csv, encoding="utf-8") as f:
    return [r["id"] for r in csv.DictReader(f)]


# ---------------------------------------------------------------- labels to the right items


def test_label_studio_csv_export_labels_the_item_ids_not_the_task_numbers(tmp_path):
  pool, truth = npz_pool(tmp_path / "x.npz")
  with make(tmp_path, pool) as p:
    q = ids_of(p.query(5))
    # Label Studio's CSV export: its `id` is the task number (1..5), `item_id` the item.
    rows = [{"image": "data:...", "item_id": i, "path": "", "query": 1, "rank": n + 1,
             "id": n + 1, "label": truth[i], "annotator": 1, "annotation_id": 10 + n,
             "created_at": "2026", "updated_at": "2026", "lead_time": 1.5}
            for n, i in enumerate(q)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    (tmp_path / "ls.csv").write_text(buf.getvalue())
    # Without item_id, a Label Studio CSV is refused (its ids would go to the wrong items).
    no_item = buf.getvalue().replace("item_id,", "item,")
    (tmp_path / "ls_noitem.csv").write_text(no_item)
    before = committed(p)
    with pytest.raises(ValueError, match=r"ls_noitem.csv: a Label Studio CSV export without an "
                       r"'item_id' column: its 'id' column is Label Studio's task number"):
      p.ingest(str(tmp_path / "ls_noitem.csv"))
    assert committed(p) == before
    s = p.ingest(str(tmp_path / "ls.csv"))
    assert s["new"] == 5 and s["extra"] == 0 and s["pending"] == 0
    assert p.labels() == {i: truth[i] for i in q}


def test_two_inits_on_one_path_at_once_leave_one_project_and_refuse_the_other(tmp_path):
  pool, truth = npz_pool(tmp_path / "x.npz")
  cmd = [sys.executable, "-m", "dal_jax", "--quiet", "init", str(tmp_path / "p"), "--pool", pool,
         "--classes", ",".join(CLASSES), "--image-size", "8x8", "--data-dir",
         str(tmp_path / "tfds")]
  procs = [subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [proc.communicate(timeout=300) for proc in procs]
  codes = sorted(proc.returncode for proc in procs)
  assert codes == [0, 2], outs
  err = next(e for (o, e), proc in zip(outs, procs) if proc.returncode == 2).strip()
  assert len(err.splitlines()) == 1 and ("in use by another dal_jax process" in err
                                         or "already holds a project" in err), err
  with project_lib.open_project(str(tmp_path / "p"), progress=False) as p:
    p.ingest(answers(p.query(6), truth, tmp_path / "a.csv"))
    labeled = committed(p)
  again = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and "already holds a project" in again.stderr
  with project_lib.open_project(str(tmp_path / "p"), progress=False) as p:
    assert committed(p) == labeled and len(p.labels()) == 6


# ---------------------------------------------------------------- pools that change


def _png(path, value, size=(6, 6)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_pool_changes_join_leave_and_withdraw_changed_labels_with_a_note(tmp_path):
  root = tmp_path / "imgs"
  truth = {}
  for n in range(12):
    _png(str(root / f"{n:02d}.png"), 20 * n)
    truth[f"{n:02d}.png"] = CLASSES[n % 3]
  with make(tmp_path, str(root)) as p:
    qcsv = p.query(6)
    q = ids_of(qcsv)
    p.ingest(answers(qcsv, truth, tmp_path / "a.csv"))
    labeled = sorted(p.labels())
    p.db.commit(blobs={"method_state": b"a method's state in pool positions"})
  changed, removed = labeled[0], labeled[1]
  _png(str(root / changed), 255)                      # overwritten: a white square
  os.remove(root / removed)                           # deleted
  _png(str(root / "new.png"), 77)                     # added
  os.symlink(str(root / "nowhere.png"), str(root / "dangling.png"))  # a broken link
  with project_lib.open_project(str(tmp_path / "p"), progress=False) as p:
    pool = p.pool
    assert "new.png" in pool.ids and removed not in pool.ids
    assert [r for path, r in pool.skipped if path.endswith("dangling.png")] == ["dangling link"]
    labels = p.labels()
    assert changed not in labels and removed not in labels and len(labels) == 4
    withdrawn = {e["id"]: e["reason"] for e in p.events() if e["event"] == "withdraw"}
    assert withdrawn == {changed: "content changed", removed: "left the pool"}
    history = [e["event"] for e in p.events() if e["id"] == changed]
    assert history == ["label", "withdraw"]  # the old label stays in the history
    assert p.db.blob("method_state") is None  # positions moved: the method starts afresh
    status = p.status(plot=False)
    assert status["pool_changes"]["joined"] == 1 and status["pool_changes"]["left"] == 1
    assert status["pool_changes"]["changed"] == 1 and status["skipped_files"] == 1
    assert status["pool"] == 12 and status["labeled"] == 4
    q2 = ids_of(p.query(8))  # the changed and the new item can be queried (and labeled) again
    assert changed in q2 and "new.png" in q2 and not set(q2) & set(labels)
  assert set(q) == set(labeled)


@pytest.mark.parametrize("kind", ["png16", "tiff_int32", "tiff_float"])
def test_high_bit_depth_images_keep_their_intensities(tmp_path, kind):
  rng = np.random.default_rng(0)
  ramp = rng.random((16, 16))  # mean about 0.5
  path = str(tmp_path / f"im.{'png' if kind == 'png16' else 'tif'}")
  if kind == "png16":
    Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)).save(path)
  elif kind == "tiff_int32":
    Image.fromarray(np.rint(ramp * (2**31 - 1)).astype(np.int32)).save(path)
  else:
    Image.fromarray(ramp.astype(np.float32)).save(path)
  img = pool_lib.decode_image(path, (16, 16), 1) / 255.0
  np.testing.assert_allclose(img[..., 0], ramp, atol=0.5 / 255 + 1e-6)
  rgb = pool_lib.decode_image(path, (8, 8), 3) / 255.0
  assert rgb.shape == (8, 8, 3) and abs(rgb.mean() - ramp.mean()) < 0.01


def test_images_outside_their_range_are_skipped_and_named(tmp_path, capsys):
  root = tmp_path / "imgs"
  root.mkdir()
  Image.fromarray(np.full((4, 4), 2.5, np.float32)).save(root / "bright.tif")
  Image.fromarray(np.full((4, 4), -7, np.int32)).save(root / "negative.tif")
  for n in range(2):
    _png(str(root / f"ok{n}.png"), 100)
  pool = pool_lib.load_pool(str(root), image_size=(4, 4), data_dir=str(tmp_path / "tfds"),
                            progress=False)
  assert pool.ids == ["ok0.png", "ok1.png"]
  reasons = {os.path.basename(p): r for p, r in pool.skipped}
  assert "outside [0, 1]" in reasons["bright.tif"] and "negative" in reasons["negative.tif"]
  assert "skipped" in capsys.readouterr().err


def test_odd_file_names_are_skipped_and_named_and_the_project_stays_usable(tmp_path):
  root = tmp_path / "imgs"
  for n in range(6):
    _png(str(root / f"{n}.png"), 40 * n)
  bad_utf8 = os.path.join(os.fsencode(str(root)), b"caf\xe9.png")
  Image.fromarray(np.zeros((6, 6), np.uint8)).save(bad_utf8, format="PNG")
  _png(str(root / "line\rbreak.png"), 10)
  with make(tmp_path, str(root)) as p:
    skipped = dict((os.path.basename(path), r) for path, r in p.pool.skipped)
    assert skipped == {"caf\\udce9.png": "its name is not valid UTF-8; rename it",
                       "line\\rbreak.png": "its name holds a line break; rename it"}
    q = p.query(3)
    truth = {i: "a" for i in p.pool.ids}
    assert p.ingest(answers(q, truth, tmp_path / "a.csv"))["new"] == 3


# ---------------------------------------------------------------- state that commits as a whole


def _v1_project(tmp_path, pool, truth, *, rounds_in_log=True):
  """A project as dal_jax wrote it before the database (version 1: five files)."""
  path = tmp_path / "old"
  path.mkdir()
  loaded = pool_lib.load_pool(pool, image_size=(8, 8), class_names=CLASSES)
  with open(path / "pool.csv", "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(["position", "id", "path"])
    for n, i in enumerate(loaded.ids):
      w.writerow([n, i, ""])
  config = project_lib.make_config(overrides=FAST)
  (path / "project.json").write_text(json.dumps({
      "version": 1, "classes": CLASSES, "cold_start": "random", "created": "2026-11-01T00:00:00",
      "config": config_lib.resolved(config),
      "pool": {"source": pool, "image_size": [8, 8], "channels": 1,
               "labels_from_folders": False, "data_dir": None, "items": 40, "skipped": []}}))
  first, second = loaded.ids[:5], loaded.ids[5:9]
  events = [{"event": "label", "id": i, "label": truth[i], "round": 0, "source": "a.csv",
             "time": "t"} for i in first]
  events += [{"event": "label", "id": i, "label": truth[i], "round": 1, "source": "b.csv",
              "time": "t"} for i in second]
  if not rounds_in_log:
    events = []
  (path / "labels.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
  (path / "state.json").write_text(json.dumps({
      "round": 1, "queries": 2, "pending": None, "history": [
          {"labeled": 9, "cv_accuracy": 0.5, "time": "t"}]}))
  return str(path), first + second


def test_a_version_1_project_migrates_with_nothing_lost(tmp_path):
  pool, truth = npz_pool(tmp_path / "x.npz")
  path, labeled = _v1_project(tmp_path, pool, truth)
  with project_lib.open_project(path, progress=False) as p:
    assert p.labels() == {i: truth[i] for i in labeled}
    assert p.meta["round"] == 1 and p.meta["queries"] == 2 and len(p.meta["history"]) == 1
    q = ids_of(p.query(4))
    assert len(q) == 4 and not set(q) & set(labeled) and os.path.basename(
        p.meta["pending"]["file"]) == "query_003.csv"
  assert sorted(os.listdir(os.path.join(path, "v1"))) == ["labels.jsonl", "pool.csv",
                                                           "project.json", "state.json"]


@pytest.mark.parametrize("damage", ["emptied log", "round in state", "structure"])
def test_an_inconsistent_version_1_project_is_refused_and_left_as_it_was(tmp_path, damage):
  pool, truth = npz_pool(tmp_path / "x.npz")
  path, _ = _v1_project(tmp_path, pool, truth, rounds_in_log=damage != "emptied log")
  if damage == "round in state":
    (tmp_path / "old" / "state.json").write_text(json.dumps({"round": 3, "queries": 4,
                                                             "pending": None}))
  if damage == "structure":
    (tmp_path / "old" / "state.json").write_text(json.dumps([1, 2]))
  files = {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path)}
  match = "needs integer 'round'" if damage == "structure" else "truncated or emptied"
  with pytest.raises(ValueError, match=match) as err:
    project_lib.open_project(path, progress=False)
  assert "\n" not in str(err.value)
  assert {n: open(os.path.join(path, n), "rb").read() for n in os.listdir(path)
          if n != ".lock"} == files


def test_skip_withdraws_a_label_and_the_history_keeps_it(tmp_path):
  pool, truth = npz_pool(tmp_path / "x.npz")
  with make(tmp_path, pool) as p:
    q = p.query(5)
    p.ingest(answers(q, truth, tmp_path / "a.csv"))
    first = ids_of(q)[0]
    (tmp_path / "s.csv").write_text(f"id,label\n{first},skip\n")
    s = p.ingest(str(tmp_path / "s.csv"))
    assert s["withdrawn"] == 1 and s["new"] == 0 and s["unchanged"] == 0
    assert first not in p.labels() and len(p.labels()) == 4
    assert [e["event"] for e in p.events() if e["id"] == first] == ["label", "withdraw"]
    assert p.ingest(str(tmp_path / "s.csv"))["withdrawn"] == 0  # already withdrawn


def test_a_corrupt_database_is_one_line(tmp_path):
  pool, _ = npz_pool(tmp_path / "x.npz")
  make(tmp_path, pool).close()
  db = tmp_path / "p" / "project.db"
  db.write_bytes(db.read_bytes()[:200])
  out = subprocess.run([sys.executable, "-m", "dal_jax", "status", str(tmp_path / "p")],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert "project.db is damaged" in out.stderr


def test_dfal_in_a_project_sizes_its_state_by_the_pool(tmp_path):
  pool, truth = npz_pool(tmp_path / "x.npz")
  with make(tmp_path, pool, acquisition="dfal",
            **{"methods.dfal.adversarial_training": True}) as p:
    p.ingest(answers(p.query(6), truth, tmp_path / "a.csv"))
    p.ingest(answers(p.query(3), truth, tmp_path / "b.csv"))
    with np.load(io.BytesIO(p.db.blob("method_state"))) as z:
      biggest = max(z[k].shape[0] for k in z.files)
    assert biggest == 40  # one slot per pool item at most, not one per 10**9 budget labels


# ---------------------------------------------------------------- answers files


def test_answers_files_from_spreadsheets_and_label_studio_variants(tmp_path):
  pool, truth = npz_pool(tmp_path / "x.npz")
  with make(tmp_path, pool) as p:
    q = ids_of(p.query(4))
    # Excel's trailing empty rows.
    (tmp_path / "x.csv").write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in q[:2])
                                    + ",\n,,\n")
    assert p.ingest(str(tmp_path / "x.csv"))["new"] == 2
    # A second <Choices> control (a quality flag) is not an answer.
    export = [{"id": 7 + n, "data": {"item_id": i}, "annotations": [{"result": [
        {"from_name": "label", "value": {"choices": [truth[i]]}},
        {"from_name": "quality", "value": {"choices": ["blurry"]}}]}]} for n, i in enumerate(q[2:])]
    (tmp_path / "ls.json").write_text(json.dumps(export))
    assert p.ingest(str(tmp_path / "ls.json"))["new"] == 2
    before = committed(p)
    for n, bad in enumerate([
        [{"id": 1, "data": {"item_id": q[0]}, "annotations": "oops"}],
        [{"id": 1, "data": {"item_id": q[0]}, "annotations": [{"result": {"a": 1}}]}],
        [{"id": 1, "data": {"item_id": q[0]}, "annotations": [{"result": [
            {"from_name": "label", "value": {"choices": "a"}}]}]}],
        [{"id": 1, "data": {"item_id": [1]}, "annotations": []}]]):
      (tmp_path / f"bad{n}.json").write_text(json.dumps(bad))
      with pytest.raises(ValueError, match=rf"bad{n}.json, task 1: ") as err:
        p.ingest(str(tmp_path / f"bad{n}.json"))
      assert "\n" not in str(err.value)
    assert committed(p) == before


def test_label_config_escapes_class_names():
  xml = project_lib.label_config(['a&b', 'say "hi"', "<c>"])
  import xml.etree.ElementTree as ET
  values = [c.get("value") for c in ET.fromstring(xml).iter("Choice")]
  assert values == ['a&b', 'say "hi"', "<c>"]


# ---------------------------------------------------------------- the command line


def test_command_line_edge_cases_are_one_line_and_change_nothing(tmp_path, capsys):
  pool, truth = npz_pool(tmp_path / "x.npz")
  proj = str(tmp_path / "p")
  assert tool.run(["--quiet", "init", proj, "--pool", pool, "--classes", "a,b,c", "--image-size",
                   "8x8", "--data-dir", str(tmp_path / "tfds"), "--set",
                   "train.max_steps=5"]) == 0
  assert tool.run(["--quiet", "query", proj, "-k", "0"]) == 2
  assert "-k 0 is not allowed: expected 1 <= k <= 40" in capsys.readouterr().err
  assert tool.run(["--quiet", "query", proj, "-k", "5"]) == 0
  query = capsys.readouterr().out.strip()
  assert tool.run(["--quiet", "ingest", proj, answers(query, truth, tmp_path / "a.csv")]) == 0
  capsys.readouterr()
  # A failed query does not keep its --acquisition.
  assert tool.run(["--quiet", "query", proj, "-k", "999", "--acquisition", "margin"]) == 2
  with project_lib.open_project(proj, progress=False) as p:
    assert p.config.acquisition == "entropy"
  assert tool.run(["--quiet", "query", proj, "-k", "3"]) == 0
  capsys.readouterr()
  # A moved project still finds its pending query.
  shutil.move(proj, str(tmp_path / "moved"))
  assert tool.run(["--quiet", "query", str(tmp_path / "moved")]) == 2
  err = capsys.readouterr().err
  assert "query 002" in err and os.path.join("moved", "queries", "query_002.csv") in err
  # The label log, readable.
  assert tool.run(["--quiet", "log", str(tmp_path / "moved")]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 5 and all(json.loads(line)["event"] == "label" for line in lines)


def test_ctrl_c_during_a_query_exits_at_once_and_changes_nothing(tmp_path):
  pool, truth = npz_pool(tmp_path / "x.npz")
  with make(tmp_path, pool, **{"train.max_steps": 10**6, "train.eval_every": 100}) as p:
    p.ingest(answers(p.query(6), truth, tmp_path / "a.csv"))
    before = committed(p)
  for _ in range(2):
    proc = subprocess.Popen([sys.executable, "-m", "dal_jax", "query", p.path, "-k", "3"],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while b"training on 6 labels" not in seen:  # wait for the state, not for a time
      line = proc.stderr.readline()
      assert line, seen.decode(errors="replace")
      seen += line
    proc.send_signal(signal.SIGINT)  # training is running (10**6 steps): the query is not done
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 130, err
    assert err.strip().endswith(tool.INTERRUPTED) and "Traceback" not in err
    with project_lib.open_project(p.path, progress=False) as again:
      assert committed(again) == before


# ---------------------------------------------------------------- model options, selectors, training


@pytest.mark.parametrize("model,option,value,allowed", [
    ("mlp", "dropout", 1.5, "a dropout rate in"),
    ("mlp", "dropout", 1.0, "a dropout rate in"),
    ("mlp", "dropout", float("nan"), "a dropout rate in"),
    ("mlp", "dropout", -0.3, "a dropout rate in"),
    ("mlp", "hidden", (0,), "layer widths >= 1"),
    ("mlp", "hidden", (), "layer widths >= 1"),
    ("gal_cnn", "dropout", (0.1, 0.2, 0.3), "two dropout rates"),
    ("gal_cnn", "filters", 0, "an integer >= 1"),
    ("resnet18", "blocks", (2, 2), "four block counts"),
])
def test_model_options_are_range_checked(model, option, value, allowed):
  config = config_lib.default_config()
  config.model = model
  config.models[model][option] = value
  with pytest.raises(ValueError, match=rf"config.models.{model}.{option}=.* is not allowed: "
                     rf"expected .*{allowed}"):
    config_lib.check(config)
  with pytest.raises(ValueError, match="is not allowed"):
    models_lib.get_model(model, (8, 8, 1), 3, **{option: value})


def test_a_model_registered_from_user_code_has_its_options_in_the_config():
  def tiny(input_shape, num_classes, *, width: int = 4):
    return models_lib.get_model("mlp", input_shape, num_classes, hidden=(width,))

  models_lib.MODELS["tiny_user_model"] = tiny
  try:
    config = config_lib.default_config()
    assert config.models.tiny_user_model.width == 4
    config.model = "tiny_user_model"
    config_lib.check(config)
  finally:
    del models_lib.MODELS["tiny_user_model"]


def test_register_model_declares_options_and_their_checks():
  def tiny(input_shape, num_classes, *, width=4):
    return models_lib.get_model("mlp", input_shape, num_classes, hidden=(width,))

  models_lib.register_model("tiny_checked", tiny, options={"width": 4},
                            checks={"width": (lambda v: isinstance(v, int) and v >= 2,
                                              "an integer >= 2")})
  try:
    assert config_lib.default_config().models.tiny_checked.width == 4
    assert callable(models_lib.get_model("tiny_checked", (8, 8, 1), 3, width=3).apply)
    with pytest.raises(ValueError, match=r"config.models.tiny_checked.width=1 is not allowed: "
                       r"expected an integer >= 2"):
      models_lib.get_model("tiny_checked", (8, 8, 1), 3, width=1)
    with pytest.raises(ValueError, match="model 'tiny_checked' is already registered"):
      models_lib.register_model("tiny_checked", tiny)
  finally:
    del models_lib.MODELS["tiny_checked"]
    del models_lib.OPTION_CHECKS["tiny_checked"]


def test_runner_command_line_errors_are_one_line(tmp_path):
  for extra, want in [("--config.models.mlp.nope=3", "no config field 'nope'"),
                      ("--config.models.gal_cnn.dropout=0.3", "two dropout rates"),
                      ("--config.dataset=nope", "unknown dataset 'nope'")]:
    out = subprocess.run([sys.executable, "-m", "experiments.run",
                          "--config=experiments/configs/digits.py", f"--workdir={tmp_path}",
                          "--config.model=gal_cnn" if "gal_cnn" in extra else "--config.seed=0",
                          extra], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and want in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
  (tmp_path / "raising_module.py").write_text("raise RuntimeError('broken on purpose')\n")
  out = subprocess.run([sys.executable, "-m", "experiments.run", "--import=raising_module",
                        "--config=experiments/configs/digits.py", f"--workdir={tmp_path}"],
                       cwd=REPO, env={**ENV, "PYTHONPATH": f"{REPO}:{tmp_path}"},
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and out.stderr.strip() == (
      "error: --import=raising_module: RuntimeError: broken on purpose")


@pytest.mark.parametrize("name", ["top_k", "power", "softmax", "softrank"])
def test_selectors_under_jit_never_return_masked_points(name):
  scores = jnp.array([0.3, -jnp.inf, 0.5, -jnp.inf, 0.1])
  select = acq.get_selector(name)
  idx = np.asarray(jax.jit(lambda s: select(jax.random.key(0), s, 4, beta=1.0))(scores))
  assert sorted(idx[idx >= 0].tolist()) == [0, 2, 4] and (idx == -1).sum() == 1
  with pytest.raises(ValueError, match="only 3 unlabeled candidates"):
    select(jax.random.key(0), scores, 4, beta=1.0)


def test_k_as_a_jax_integer_and_acquire_under_jit():
  np.testing.assert_array_equal(acq.top_k(jnp.arange(9.0), jnp.int32(3)), [8, 7, 6])
  lp = jax.nn.log_softmax(jax.random.normal(jax.random.key(0), (4, 20, 3)))
  where = jnp.arange(20) > 4
  run = lambda lp: acq.acquire("bald", {"log_probs": lp}, key=jax.random.key(1), k=3,  # noqa: E731
                               where=where)
  np.testing.assert_array_equal(jax.jit(run)(lp), run(lp))
  with pytest.raises(ValueError, match="k must be a static integer"):
    jax.jit(lambda k: acq.top_k(jnp.arange(9.0), k))(3)


def test_max_steps_is_an_upper_bound():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(40, 4, 4, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, 40), jnp.int32)
  m = models_lib.get_model("mlp", (4, 4, 1), 3, hidden=(8,))
  cfg = training.TrainConfig(max_steps=30, eval_every=25, min_steps=0, min_epochs=0.0)
  one = training.fit(m, x, y, np.arange(40) < 20, key=jax.random.key(0), config=cfg)
  assert one.steps == 30
  stacked = learner_lib.Learner(model=m, config=cfg).fit(
      x, y, jnp.asarray(np.arange(40)[None] < 20), keys=jax.random.split(jax.random.key(0), 1))
  assert stacked.steps.tolist() == [30]


def test_bad_pool_arrays_manifests_and_caches_are_one_line(tmp_path):
  x = np.zeros((4, 5, 5), np.uint8)
  cases = {
      "float labels": (dict(x=x, y=np.array([0.0, 1.0, -1.0, 2.0])), "labels must be integer"),
      "nan labels": (dict(x=x, y=np.array([0, np.nan, 1, 2])), "labels must be integer"),
      "string labels": (dict(x=x, y=np.array(["a", "b", "c", "a"])), "labels must be integer"),
      "int16 images": (dict(x=x.astype(np.int16)), "integer pool arrays must be uint8"),
  }
  for name, (arrays, match) in cases.items():
    path = tmp_path / f"{name.replace(' ', '_')}.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match) as err:
      pool_lib.load_pool(str(path), class_names=CLASSES)
    assert str(path) in str(err.value) and "\n" not in str(err.value), name
  np.save(tmp_path / "empty.npy", np.zeros((0,), np.uint8))
  with pytest.raises(ValueError, match=r"empty.npy: pool arrays must be \[N, H, W\]"):
    pool_lib.load_pool(str(tmp_path / "empty.npy"))
  (tmp_path / "m.jsonl").write_text(json.dumps({"path": 7}) + "\n")
  with pytest.raises(ValueError, match=r"m.jsonl, line 1: 'path' must be a string, got 7"):
    pool_lib.load_pool(str(tmp_path / "m.jsonl"))
  # A damaged decoded-pool cache is named (and decoding again is one deletion away).
  root = tmp_path / "imgs"
  for n in range(3):
    _png(str(root / f"{n}.png"), 50 * n)
  pool_lib.load_pool(str(root), image_size=(6, 6), data_dir=str(tmp_path / "tfds"),
                     progress=False)
  for dirpath, _, files in os.walk(tmp_path / "tfds"):
    for f in files:
      if ".array_record" in f:
        with open(os.path.join(dirpath, f), "r+b") as fh:
          fh.truncate(10)
  with pytest.raises(ValueError, match="decoded-pool cache .* is damaged"):
    pool_lib.load_pool(str(root), image_size=(6, 6), data_dir=str(tmp_path / "tfds"),
                       progress=False)


def test_a_full_disk_at_commit_is_one_line_and_changes_nothing(tmp_path):
  pool, truth = npz_pool(tmp_path / "x.npz")
  with make(tmp_path, pool) as p:
    q = p.query(4)
    before = committed(p)
    real = p.db.conn

    class Full:
      def __getattr__(self, name):
        return getattr(real, name)

      def execute(self, sql, *args):
        if sql == "COMMIT":
          raise sqlite3.OperationalError("database or disk is full")
        return real.execute(sql, *args)

    p.db.conn = Full()
    with pytest.raises(ValueError, match=r"project.db: the change could not be committed "
                       r"\(database or disk is full\); nothing was changed"):
      p.ingest(answers(q, truth, tmp_path / "a.csv"))
    p.db.conn = real
    assert committed(p) == before
    assert p.ingest(str(tmp_path / "a.csv"))["new"] == 4


def test_preparing_a_pool_prints_no_download_note(tmp_path, capfd):
  root = tmp_path / "imgs"
  for n in range(2):
    _png(str(root / f"{n}.png"), 9 * n)
  pool_lib.load_pool(str(root), image_size=(6, 6), data_dir=str(tmp_path / "tfds"),
                     progress=True)
  out, err = capfd.readouterr()
  assert "Downloading" not in out + err and "decoding 2 images" in err
  pool_lib.load_pool(str(root), image_size=(6, 6), data_dir=str(tmp_path / "tfds_quiet"),
                     progress=False)  # (dal-jax --quiet): nothing at all
  out, err = capfd.readouterr()
  assert "decoding" not in out + err and "Downloading" not in out + err
