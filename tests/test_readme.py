"""The README's and the docs' promises: their examples run, and .ci/run runs exactly the README's
install and test commands."""

import os
import re

import numpy as np
import pytest

from dal_jax import acquisition as acq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  """The README followed by every page of docs/ (examples are found wherever they live)."""
  paths = [os.path.join(REPO, "README.md")] + sorted(
      os.path.join(root, name) for root, _, names in os.walk(os.path.join(REPO, "docs"))
      for name in names if name.endswith(".md"))
  return "\n".join(open(p, encoding="utf-8").read() for p in paths)


def _code_blocks(text):
  return re.findall(r"```(?:bash|python)\n(.*?)```", text, flags=re.S)


def test_new_acquisition_example_runs(capsys):
  text = _readme()
  block = re.search(r"<!-- example: new-acquisition -->\n```python\n(.*?)```", text, re.S).group(1)
  scope = {}
  try:
    exec(compile(block, "README example", "exec"), scope)  # noqa: S102
    picked = np.asarray(scope["picked"])
    assert len(set(picked.tolist())) == 5 and (picked >= 10).all()
  finally:
    acq.ACQUISITIONS.pop("bald_ratio", None)


def test_library_example_runs():
  blocks = [b for b in _code_blocks(_readme()) if "acquisition.top_k(scores, 10)" in b]
  scope = {}
  exec(compile(blocks[0], "README library example", "exec"), scope)  # noqa: S102
  assert scope["batch"].shape == (10,)


def test_ci_runs_readme_install_and_test_commands():
  blocks = _code_blocks(_readme())
  install = next(line for b in blocks for line in b.splitlines() if "pip install -e" in line
                 and "apt-get" in line)
  test = next(line for b in blocks for line in b.splitlines() if "pytest" in line
              and not line.startswith("#"))
  with open(os.path.join(REPO, ".ci", "run")) as f:
    ci = [line.strip() for line in f if line.strip() and not line.startswith("#")]
  assert install.strip() in ci and test.strip() in ci
  assert ci.index(install.strip()) < ci.index(test.strip())


def test_learned_acquisition_example_runs():
  blocks = [b for b in _code_blocks(_readme()) if "dal.select(" in b]
  scope = {}
  exec(compile(blocks[0], "README learned-acquisition example", "exec"), scope)  # noqa: S102
  indices = np.asarray(scope["indices"])
  assert len(set(indices.tolist())) == 20 and (indices >= 100).all()
  assert "classifier" in scope["state"]


@pytest.mark.parametrize("example,module,expect", [
    ("new-acquisition", "bald_ratio", "[bald_ratio seed 0] round   1"),
    ("new-task", "brier_task", "[bald seed 0] round   1")])
def test_extension_commands_work_as_written(tmp_path, example, module, expect):
  """Docs: save the example as MODULE.py, then its command runs it with --import."""
  import subprocess
  import sys
  text = _readme()
  block = re.search(rf"<!-- example: {example} -->\n```python\n(.*?)```", text, re.S).group(1)
  (tmp_path / f"{module}.py").write_text(block)
  command = next(line for b in _code_blocks(text) for line in b.splitlines()
                 if f"--import={module}" in line)
  assert command.startswith("PYTHONPATH=. python -m experiments.run")
  args = command.split()[4:]  # after "PYTHONPATH=. python -m experiments.run"
  args = [a if not a.startswith("--workdir=") else f"--workdir={tmp_path / 'run'}" for a in args]
  env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "experiments.run", *args,
                         "--config.budget=30", "--config.train.max_steps=20"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert expect in proc.stdout


def _example(name, lang):
  return re.search(rf"<!-- example: {name} -->\n```{lang}\n(.*?)```", _readme(), re.S).group(1)


def _run_commands(example: str, monkeypatch, capsys) -> None:
  """Runs a README bash example line by line in this process, in the current directory:
  ``dal-jax ARGS`` is ``dal_jax.tool.run(ARGS)`` and ``python -m MODULE ARGS`` is the module's
  ``main()`` with those arguments (the same argument lists, without a JAX start and compiles per
  command); anything after two spaces and ``#`` is a comment; ``> FILE`` redirects stdout."""
  import importlib
  import shlex
  import sys

  from dal_jax import tool

  monkeypatch.syspath_prepend(REPO)
  for line in _example(example, "bash").splitlines():
    argv = shlex.split(line.split("  #")[0])
    if not argv:
      continue
    out = None
    if ">" in argv:
      argv, out = argv[:argv.index(">")], argv[argv.index(">") + 1]
    capsys.readouterr()
    if argv[0] == "dal-jax":
      assert tool.run(argv[1:]) == 0, (line, capsys.readouterr().err[-2000:])
    else:
      assert argv[:2] == ["python", "-m"], line
      monkeypatch.setattr(sys, "argv", [argv[2], *argv[3:]])
      importlib.import_module(argv[2]).main()
    if out is not None:
      with open(out, "w", encoding="utf-8") as f:
        f.write(capsys.readouterr().out)


def test_label_your_own_data_commands_run_as_written(tmp_path, monkeypatch, capsys):
  """The README's commands from a folder of images to the first exported model, one by one;
  then `dal-jax status`, the console script the install command puts on PATH, in a process of
  its own."""
  import json
  import subprocess

  monkeypatch.chdir(tmp_path)
  _run_commands("label-your-own-data", monkeypatch, capsys)
  status = subprocess.run(["dal-jax", "--quiet", "status", "shirts"], cwd=tmp_path,
                          capture_output=True, text=True, check=True)
  assert json.loads(status.stdout)["labeled"] == 30
  assert (tmp_path / "shirts" / "export" / "predictions.csv").read_text().count("\n") == 301


def test_project_api_example_runs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(REPO)
  scope = {}
  exec(compile(_example("project-api", "python"), "README project example", "exec"), scope)  # noqa: S102
  labels = (tmp_path / "shirts_nb" / "export" / "labels.jsonl").read_text().splitlines()
  assert len(labels) == 40
  names, probs = scope["model"].predict(["shop/images/shoot_0/day_0/img_0000.png"])
  assert names[0] in scope["fashion_folder"].CLASSES and probs.shape == (1, 10)


def test_label_your_own_masks_commands_run_as_written(tmp_path, monkeypatch, capsys):
  """The README's segmentation project commands, one by one."""
  import json

  from dal_jax import tool

  monkeypatch.chdir(tmp_path)
  _run_commands("label-your-own-masks", monkeypatch, capsys)
  capsys.readouterr()
  assert tool.run(["--quiet", "status", "rooms"]) == 0
  record = json.loads(capsys.readouterr().out)
  assert record["labeled"] == 15 and record["labeled_pixels"] == 15 * 32 * 32
  assert 0 <= record["cv_miou"] <= 1
  export = tmp_path / "rooms" / "export"
  assert len(os.listdir(export / "masks")) == 60 and len(os.listdir(export / "labels")) == 15
  for name in os.listdir(export / "labels"):
    assert ((export / "labels" / name).read_bytes()
            == (tmp_path / "scenes_demo" / "masks" / name).read_bytes())


def test_label_your_own_boxes_commands_run_as_written(tmp_path, monkeypatch, capsys):
  """The README's detection project commands, one by one."""
  import json

  from dal_jax import tool

  monkeypatch.chdir(tmp_path)
  _run_commands("label-your-own-boxes", monkeypatch, capsys)
  capsys.readouterr()
  assert tool.run(["--quiet", "status", "shelf"]) == 0
  record = json.loads(capsys.readouterr().out)
  truth = json.loads((tmp_path / "boxes_demo" / "annotations.json").read_text())
  names = {im["id"]: im["file_name"] for im in truth["images"]}
  labels = json.loads((tmp_path / "shelf" / "export" / "labels.json").read_text())
  assert record["labeled"] == 15 and len(labels["images"]) == 15
  want = sum(names[a["image_id"]] in {im["file_name"] for im in labels["images"]}
             for a in truth["annotations"])
  assert record["boxes"] == want == len(labels["annotations"])
  assert 0 <= record["cv_map50"] <= 1
  predictions = json.loads((tmp_path / "shelf" / "export" / "predictions.json").read_text())
  assert len(predictions["images"]) == 60
