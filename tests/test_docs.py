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
