"""The documentation: its generated reference pages are current, and the site builds strictly
(every warning an error: broken links, missing pages, API docstrings that do not resolve)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_reference_pages_are_current():
  """Run in a process of its own: tests register extra tasks and acquisitions in theirs."""
  done = subprocess.run([sys.executable, "-m", "dal_jax._docs", "--check"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]


def test_stale_pages_are_named(tmp_path):
  from dal_jax import _docs

  _docs.write(str(tmp_path))
  assert _docs.stale(str(tmp_path)) == []
  page = tmp_path / "reference" / "config.md"
  page.write_text(page.read_text().replace("`budget`", "`budget_`"))
  assert _docs.stale(str(tmp_path)) == ["reference/config.md"]


def test_site_builds_strictly(tmp_path):
  done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                         str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (tmp_path / "site" / "reference" / "acquisitions" / "index.html").exists()
  assert "dal_jax.loop.propose" in (tmp_path / "site" / "api" / "index.html").read_text()


def _commands():
  """Every ``python -m experiments.run|compare ...`` command of the README and docs/ (lines
  joined at their backslashes), with the file it is in."""
  import re

  paths = [os.path.join(REPO, "README.md")] + sorted(
      os.path.join(root, n) for root, _, names in os.walk(os.path.join(REPO, "docs"))
      for n in names if n.endswith(".md"))
  found = []
  for path in paths:
    text = open(path, encoding="utf-8").read()
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
      for line in block.replace("\\\n", " ").splitlines():
        line = line.split("  #")[0].strip()
        if re.search(r"python -m experiments\.(run|compare)\b", line):
          found.append((os.path.relpath(path, REPO), line))
  return found


def test_every_documented_experiment_command_is_well_formed():
  """Every experiment command of the docs names a config file that loads, config fields that
  exist with values they allow, and acquisitions (and strategy overrides) that build — checked
  without running them (they take minutes to hours); the examples the other tests run do run."""
  import importlib.util
  import shlex

  from dal_jax import config as config_lib
  from dal_jax import experiment
  from experiments import compare

  commands = _commands()
  assert len(commands) >= 10, commands
  for where, line in commands:
    if "--import=" in line:  # the extension examples: run as written by tests/test_readme.py
      continue
    argv = shlex.split(line)
    argv = argv[argv.index("-m") + 2:]
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    spec = importlib.util.spec_from_file_location("doc_config", os.path.join(REPO,
                                                                              flags["config"]))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    overrides = [f"{k[len('config.'):]}={v}" for k, v in flags.items()
                 if k.startswith("config.")]
    config = config_lib.with_overrides(module.get_config(), overrides, context=where)
    strategies = flags.get("acquisitions", config.acquisition).split(",")
    for s in strategies:
      _, cfg = compare.parse_strategy(s, config)
      try:
        config_lib.check(cfg)
        experiment.build_method(cfg)
      except ValueError as e:
        raise AssertionError(f"{where}: {line}\n  strategy {s}: {e}") from None
