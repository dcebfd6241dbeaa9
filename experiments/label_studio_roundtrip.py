"""Label Studio round trip: dal_jax tasks -> a real Label Studio -> its export -> `ingest`.

Not part of the test suite (it installs and runs another program). It

1. installs ``label-studio`` from PyPI into its own virtual environment (``--venv``; reused when
   it exists),
2. makes a dal_jax project from Fashion-MNIST test images written as PNG files, labels a cold-start
   query from the true labels and queries again, so the tasks carry the model's predictions,
3. starts Label Studio on localhost, creates a project with the class names through its HTTP API,
   imports ``query_NNN_tasks.json``, submits one annotation per task as an annotator would (one
   task is skipped), exports the project as JSON,
4. ingests the export and checks the label log holds exactly the submitted answers; the
   labeling config carries a second ``<Choices>`` control (a quality flag) that every annotation
   also answers, and is not read as a class;
5. exports the same project as Label Studio CSV (its ``id`` column is Label Studio's task number,
   ``item_id`` the item's) and ingests it: every label must be the same item's same label;
6. segmentation (brush): makes a ``--task segmentation`` project of the same images (mask = the
   item's class where its pixels are bright, background elsewhere), answers a cold-start query
   with PNG masks, queries again (tasks with the model's masks as brush pre-annotations),
   imports them into a Label Studio project with the brush/polygon labeling config, submits one
   skip, one polygon and brush answers (dal_jax's RLE of the true masks), exports JSON and
   ingests it: every labeled mask must equal the submitted one pixel for pixel. Label Studio's
   own RLE decoder (``label_studio_sdk.converter.brush``, as its PNG export uses it) decodes
   every brush answer of the export to the same pixels, and dal_jax decodes RLE that Label
   Studio's encoder wrote.
7. detection (rectangles): makes a ``--task detection`` project of the same images (one box per
   image: the item's bright pixels' bounding box and class), answers a cold-start query with a
   COCO JSON, queries again (tasks with the model's boxes as rectangle pre-annotations), imports
   them into a Label Studio project with the RectangleLabels config, submits one skip and one
   rectangle per other task (the true box, in Label Studio's percent units), exports JSON and
   ingests it: every labeled image must hold exactly the submitted box.

Usage::

  python experiments/label_studio_roundtrip.py [--venv /tmp/dal_jax_ls] [--port 8089]

Prints one JSON line with the versions and the outcome; exit status 0 when the round trip holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TOKEN = "dal-jax-roundtrip-token-0123456789abcdef"


def ensure_venv(venv: str) -> str:
  exe = os.path.join(venv, "bin", "label-studio")
  if not os.path.exists(exe):
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "label-studio"],
                   check=True)
  version = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                            "import importlib.metadata as m; print(m.version('label-studio'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
  return version


def http(method: str, url: str, body=None, *, raw: bool = False):
  data = None if body is None else json.dumps(body).encode()
  req = urllib.request.Request(url, data=data, method=method, headers={
      "Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
  with urllib.request.urlopen(req, timeout=120) as r:
    body = r.read()
  return body if raw else json.loads(body or b"null")


QUALITY = ('  <Choices name="quality" toName="image" choice="single">\n'
           '    <Choice value="blurry"/>\n    <Choice value="sharp"/>\n  </Choices>\n</View>')


def wait_up(base: str, proc, timeout: float = 300) -> None:
  t0 = time.time()
  while time.time() - t0 < timeout:
    if proc.poll() is not None:
      raise RuntimeError(f"label-studio exited with {proc.returncode}")
    try:
      urllib.request.urlopen(base + "/health", timeout=5)
      return
    except (urllib.error.URLError, ConnectionError, OSError):
      time.sleep(2)
  raise RuntimeError("label-studio did not come up")


def start_label_studio(args, env, log) -> tuple[subprocess.Popen, str]:
  """Starts Label Studio on localhost and waits until it answers: ``(process, base URL)``."""
  proc = subprocess.Popen(
      [os.path.join(args.venv, "bin", "label-studio"), "start", "--no-browser",
       "--port", str(args.port), "--username", "annotator@example.org", "--password",
       "dal-jax-roundtrip", "--user-token", TOKEN], env=env, stdout=log, stderr=log)
  base = f"http://localhost:{args.port}"
  wait_up(base, proc)
  return proc, base


def ls_env(work: str, name: str) -> dict:
  """The environment of a Label Studio instance keeping its data in ``work/ls_data_<name>``."""
  return {**os.environ, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
          "LABEL_STUDIO_BASE_DATA_DIR": os.path.join(work, f"ls_data_{name}"),
          "DATA_UPLOAD_MAX_MEMORY_SIZE": str(200 * 2**20)}


def import_tasks(base: str, title: str, label_config: str, tasks) -> tuple[int, int, list]:
  """A new Label Studio project with ``tasks`` imported: ``(id, imported count, its tasks)``."""
  pid = http("POST", base + "/api/projects", {"title": title, "label_config": label_config})["id"]
  imported = http("POST", f"{base}/api/projects/{pid}/import", tasks).get("task_count")
  listed = http("GET", f"{base}/api/tasks?project={pid}&page_size=1000")
  return pid, imported, listed["tasks"] if isinstance(listed, dict) else listed


def annotate(base: str, task: dict, result: list | None) -> None:
  """Submits one annotation of ``task``; None cancels it (the annotator skips the task)."""
  http("POST", f"{base}/api/tasks/{task['id']}/annotations",
       {"result": [], "was_cancelled": True} if result is None else {"result": result})


def export_and_ingest(base: str, pid: int, p, path: str):
  """Label Studio's JSON export of project ``pid``, saved to ``path`` and ingested into the
  dal_jax project ``p``: ``(export, ingest summary)``."""
  export = http("GET", f"{base}/api/projects/{pid}/export?exportType=JSON")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(export, f)
  return export, p.ingest(path)


def stop(proc) -> None:
  proc.terminate()
  try:
    proc.wait(timeout=30)
  except subprocess.TimeoutExpired:
    proc.kill()


def main() -> int:
  ap = argparse.ArgumentParser()
  ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "dal_jax_ls"))
  ap.add_argument("--port", type=int, default=8089)
  ap.add_argument("--images", type=int, default=120)
  ap.add_argument("-k", type=int, default=8)
  ap.add_argument("--skip-segmentation", action="store_true")
  ap.add_argument("--skip-detection", action="store_true")
  args = ap.parse_args()

  from dal_jax import project as project_lib
  from experiments.fashion_folder import CLASSES, answers_file, write_folder

  ls_version = ensure_venv(args.venv)
  work = tempfile.mkdtemp(prefix="dal_jax_ls_")
  truth = write_folder(os.path.join(work, "photos"), args.images)
  folder = os.path.join(work, "photos", "images")
  p = project_lib.create(os.path.join(work, "proj"), pool=folder, classes=CLASSES,
                         overrides={"train.max_steps": 50}, data_dir=os.path.join(work, "tfds"))
  p.ingest(answers_file(p.query(20), truth, os.path.join(work, "a0.csv")))
  query = p.query(args.k)
  with open(query[:-4] + "_tasks.json", encoding="utf-8") as f:
    tasks = json.load(f)

  env = ls_env(work, "classes")
  log = open(os.path.join(work, "label_studio.log"), "w")
  result = {"label_studio": ls_version, "python": sys.version.split()[0]}
  proc = None
  try:
    proc, base = start_label_studio(args, env, log)
    pid, result["imported"], ls_tasks = import_tasks(
        base, "dal_jax round trip",
        project_lib.label_config(CLASSES).replace("</View>", QUALITY), tasks)
    submitted = {}
    for n, t in enumerate(ls_tasks):
      item = t["data"]["item_id"]
      if n == 0:  # the annotator cannot tell: skip it (it goes back to the pool)
        annotate(base, t, None)
        continue
      annotate(base, t, [
          {"from_name": "label", "to_name": "image", "type": "choices",
           "value": {"choices": [truth[item]]}},
          {"from_name": "quality", "to_name": "image", "type": "choices",
           "value": {"choices": ["blurry" if n % 2 else "sharp"]}}])
      submitted[item] = truth[item]
    export, summary = export_and_ingest(base, pid, p,
                                        os.path.join(work, "label_studio_export.json"))
    labels = p.labels()
    json_ok = (all(labels.get(i) == c for i, c in submitted.items())
               and summary["new"] == len(submitted) and summary["skipped"] == 1
               and summary["pending"] == 0)
    csv_export = http("GET", f"{base}/api/projects/{pid}/export?exportType=CSV", raw=True)
    csv_path = os.path.join(work, "label_studio_export.csv")
    with open(csv_path, "wb") as f:
      f.write(csv_export)
    result["csv_columns"] = csv_export.decode().splitlines()[0]
    csv_summary = p.ingest(csv_path)
    csv_ok = (p.labels() == labels and csv_summary["new"] == 0
              and csv_summary["relabeled"] == 0 and csv_summary["unchanged"] >= len(submitted))
    result.update(summary=summary, csv_summary=csv_summary, submitted=len(submitted),
                  json_ok=json_ok, csv_ok=csv_ok, ok=json_ok and csv_ok)
  finally:
    if proc is not None:
      stop(proc)
    p.close()
    log.close()
  print(json.dumps(result, sort_keys=True))
  if result.get("ok") and not args.skip_segmentation:
    seg = segmentation_round_trip(args, work, truth)
    print(json.dumps(seg, sort_keys=True))
    result["ok"] = seg.get("ok", False)
  if result.get("ok") and not args.skip_detection:
    boxes = detection_round_trip(args, work, truth)
    print(json.dumps(boxes, sort_keys=True))
    result["ok"] = boxes.get("ok", False)
  if result.get("ok"):
    shutil.rmtree(work, ignore_errors=True)
  else:
    print(f"kept {work} (label_studio.log inside)", file=sys.stderr)
  return 0 if result.get("ok") else 1


CONVERTER_CHECK = r"""
import json, sys
import numpy as np
try:
  from label_studio_sdk.converter import brush
except ImportError:
  from label_studio_converter import brush
job = json.load(open(sys.argv[1]))
decoded = [brush.decode_rle(r).tolist() for r in job["decode"]]
encoded = [[int(v) for v in brush.encode_rle(np.asarray(a, np.uint8))] for a in job["encode"]]
json.dump({"decoded": decoded, "encoded": encoded, "module": brush.__name__},
          open(sys.argv[2], "w"))
"""


def segmentation_round_trip(args, work: str, truth: dict[str, str]) -> dict:
  """Step 6 of the module docs: one JSON-able record with ``ok``."""
  import numpy as np
  from PIL import Image

  from dal_jax import mask_answers
  from dal_jax import project as project_lib
  from experiments.fashion_folder import CLASSES

  classes = ["background", *CLASSES]
  folder = os.path.join(work, "photos", "images")
  masks = {}
  for item, cls in truth.items():
    img = np.asarray(Image.open(os.path.join(folder, item)).convert("L"), np.float32) / 255
    masks[item] = np.where(img > 0.2, classes.index(cls), 0).astype(np.int32)
  p = project_lib.create(os.path.join(work, "seg"), pool=folder, classes=classes,
                         task="segmentation", image_size=(28, 28),
                         overrides={"train.max_steps": 50, "models.unet.width": 8},
                         data_dir=os.path.join(work, "tfds"))
  record: dict = {"task": "segmentation"}
  env = ls_env(work, "seg")
  log = open(os.path.join(work, "label_studio_seg.log"), "w")
  proc = None
  try:
    cold = p.query(10)
    answers_dir = cold[:-4] + "_answers"
    for item in p.meta["pending"]["ids"]:
      path = os.path.join(answers_dir, mask_answers.answer_name(item))
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(mask_answers.mask_png(masks[item]))
    p.ingest(answers_dir)
    query = p.query(args.k)
    with open(query[:-4] + "_tasks.json", encoding="utf-8") as f:
      tasks = json.load(f)
    record["predictions_with_brush"] = sum(bool(t.get("predictions")) for t in tasks)
    proc, base = start_label_studio(args, env, log)
    pid, record["imported"], ls_tasks = import_tasks(
        base, "dal_jax masks", mask_answers.label_config(classes), tasks)
    submitted = {}
    for n, t in enumerate(ls_tasks):
      item = t["data"]["item_id"]
      if n == 0:
        annotate(base, t, None)
        continue
      if n == 1:  # a polygon over the middle of the image
        points = [[25, 25], [75, 25], [75, 75], [25, 75]]
        result = [{"from_name": "label_polygon", "to_name": "image", "type": "polygonlabels",
                   "original_width": 28, "original_height": 28,
                   "value": {"points": points, "polygonlabels": [truth[item]]}}]
        want = np.where(mask_answers.polygon_mask(points, 28, 28), classes.index(truth[item]), 0)
      else:
        result = mask_answers.mask_results(masks[item], classes)
        want = masks[item]
      annotate(base, t, result)
      submitted[item] = want
    export, summary = export_and_ingest(base, pid, p,
                                        os.path.join(work, "label_studio_masks.json"))
    labels = p.labels()
    same = [bool(np.array_equal(p._label_value(labels[i]), m)) for i, m in submitted.items()
            if i in labels]
    record.update(summary=summary, submitted=len(submitted), masks_equal=sum(same),
                  json_ok=len(same) == len(submitted) and all(same)
                  and summary["skipped"] == 1 and summary["pending"] == 0)
    # Label Studio's own RLE code against dal_jax's, both ways.
    rles = [r["value"]["rle"] for task in export for a in task.get("annotations", [])
            for r in a.get("result", []) if r.get("type") == "brushlabels"]
    probe = (np.arange(28 * 28 * 4) // 37 % 3 * 120).astype(np.uint8)
    job, out = os.path.join(work, "rle_job.json"), os.path.join(work, "rle_out.json")
    with open(job, "w") as f:
      json.dump({"decode": rles, "encode": [probe.tolist()]}, f)
    subprocess.run([os.path.join(args.venv, "bin", "python"), "-c", CONVERTER_CHECK, job, out],
                   check=True)
    with open(out) as f:
      converted = json.load(f)
    theirs_decode = all(np.array_equal(np.asarray(d, np.uint8), mask_answers.rle_decode(r))
                        for d, r in zip(converted["decoded"], rles))
    ours_decode = np.array_equal(mask_answers.rle_decode(converted["encoded"][0]), probe)
    record.update(rle_module=converted["module"], brush_results=len(rles),
                  label_studio_decodes_ours=theirs_decode, ours_decode_label_studio=ours_decode)
    record["ok"] = record["json_ok"] and theirs_decode and ours_decode and len(rles) > 0
  finally:
    if proc is not None:
      stop(proc)
    p.close()
    log.close()
  return record


def detection_round_trip(args, work: str, truth: dict[str, str]) -> dict:
  """Step 7 of the module docs: one JSON-able record with ``ok``."""
  import numpy as np
  from PIL import Image

  from dal_jax import box_answers
  from dal_jax import project as project_lib
  from experiments.fashion_folder import CLASSES

  folder = os.path.join(work, "photos", "images")
  boxes = {}
  for item, cls in truth.items():
    img = np.asarray(Image.open(os.path.join(folder, item)).convert("L"), np.float32) / 255
    rows, cols = np.nonzero(img > 0.2)
    boxes[item] = [CLASSES.index(cls), int(rows.min()), int(cols.min()), int(rows.max()) + 1,
                   int(cols.max()) + 1]
  p = project_lib.create(os.path.join(work, "det"), pool=folder, classes=CLASSES,
                         task="detection", image_size=(28, 28),
                         overrides={"train.max_steps": 400, "train.min_steps": 400,
                                    "models.centernet.width": 8},
                         data_dir=os.path.join(work, "tfds"))
  record: dict = {"task": "detection"}
  env = ls_env(work, "det")
  log = open(os.path.join(work, "label_studio_det.log"), "w")
  proc = None
  try:
    p.query(40)
    cold = box_answers.coco_file([(i, [boxes[i]], None) for i in p.meta["pending"]["ids"]],
                                 CLASSES, (28, 28))
    cold_path = os.path.join(work, "cold_coco.json")
    with open(cold_path, "w") as f:
      json.dump(cold, f)
    p.ingest(cold_path)
    query = p.query(args.k)
    with open(query[:-4] + "_tasks.json", encoding="utf-8") as f:
      tasks = json.load(f)
    record["tasks_with_predictions"] = sum(bool(t.get("predictions")) for t in tasks)
    record["predicted_rectangles"] = sum(len(t["predictions"][0]["result"]) for t in tasks
                                         if t.get("predictions"))
    proc, base = start_label_studio(args, env, log)
    pid, record["imported"], ls_tasks = import_tasks(
        base, "dal_jax boxes", box_answers.label_config(CLASSES), tasks)
    submitted = {}
    for n, t in enumerate(ls_tasks):
      item = t["data"]["item_id"]
      annotate(base, t, None if n == 0 else
               box_answers.rectangle_results([boxes[item]], CLASSES, (28, 28)))
      if n:
        submitted[item] = [boxes[item]]
    export, summary = export_and_ingest(base, pid, p,
                                        os.path.join(work, "label_studio_boxes.json"))
    labels = p.labels()
    same = [p._rows(labels[i]).tolist() == rows for i, rows in submitted.items() if i in labels]
    record.update(summary=summary, submitted=len(submitted), boxes_equal=sum(same),
                  rectangle_results=sum(r.get("type") == "rectanglelabels" for task in export
                                        for a in task.get("annotations", [])
                                        for r in a.get("result", [])))
    # The model's rectangles came back from Label Studio as the tasks' predictions, unchanged.
    sent = {t["data"]["item_id"]: box_answers.rectangle_rows(
        t["predictions"][0]["result"], CLASSES, (28, 28), where="sent") for t in tasks}
    back = {}
    for t in ls_tasks:  # (the JSON export lists prediction IDs; the API gives their results)
      stored = http("GET", f"{base}/api/predictions?task={t['id']}")
      stored = stored.get("results", []) if isinstance(stored, dict) else stored
      back[t["data"]["item_id"]] = sorted(
          r for pr in stored for r in box_answers.rectangle_rows(
              pr.get("result", []), CLASSES, (28, 28), where="prediction"))
    record["predictions_back_equal"] = all(sorted(v) == back.get(k) for k, v in sent.items())
    record["ok"] = (len(same) == len(submitted) and all(same) and summary["skipped"] == 1
                    and summary["pending"] == 0 and record["rectangle_results"] == len(same)
                    and record["predicted_rectangles"] > 0 and record["predictions_back_equal"])
  finally:
    if proc is not None:
      stop(proc)
    p.close()
    log.close()
  return record


if __name__ == "__main__":
  sys.exit(main())
