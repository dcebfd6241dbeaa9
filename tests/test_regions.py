"""Region queries for segmentation: window scores, the choice of windows with non-maximum
masking and RIPU's region impurity against brute-force float64 references, and the loop
labeling windows under a pixel budget."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax
from scipy.special import logsumexp

from dal_jax import acquisition as acq


def _windows_reference(scores, asked, r, reduction, q):
  n, h, w = scores.shape
  out = np.empty((n, (h // r) * (w // r)))
  for i in range(n):
    for gi in range(h // r):
      for gj in range(w // r):
        v = scores[i, gi * r:(gi + 1) * r, gj * r:(gj + 1) * r].reshape(-1)
        a = asked[i, gi * r:(gi + 1) * r, gj * r:(gj + 1) * r]
        if a.any():
          val = -np.inf
        elif reduction == "mean":
          val = v.mean()
        elif reduction == "max":
          val = v.max()
        elif reduction == "sum":
          val = v.sum()
        else:
          val = np.sort(v)[::-1][:max(1, math.ceil(round(q * v.size, 9)))].mean()
        out[i, gi * (w // r) + gj] = val
  return out


@pytest.mark.parametrize("reduction", acq.REDUCTIONS)
def test_window_scores_match_a_loop_reference(rng, reduction):
  scores = rng.random((3, 8, 12))
  asked = rng.random((3, 8, 12)) > 0.97
  got = np.asarray(acq.window_scores(jnp.asarray(scores, jnp.float32), jnp.asarray(asked), 4,
                                     reduction=reduction, q=0.25))
  np.testing.assert_allclose(got, _windows_reference(scores, asked, 4, reduction, 0.25),
                             rtol=1e-5)
  with pytest.raises(ValueError, match=r"region_size=5 must be an integer >= 1 dividing the "
                     r"image's 8x12 pixels"):
    acq.window_scores(scores, asked, 5)


def _select_reference(scores, k, rows, cols):
  """Brute force: at each step the best window (lowest position on ties) among those not taken
  and not next to a taken one, else among those not taken."""
  n, g = scores.shape
  taken, masked, out = set(), set(), []
  for _ in range(k):
    free = [(-scores[i, w], i * g + w) for i in range(n) for w in range(g)
            if (i, w) not in taken and np.isfinite(scores[i, w])]
    pool = [c for c in free if divmod(c[1], g) not in masked] or free
    _, u = min(pool)
    i, w = divmod(u, g)
    taken.add((i, w))
    out.append((i, w))
    r, c = divmod(w, cols)
    masked |= {(i, (r + dr) * cols + c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
               if 0 <= r + dr < rows and 0 <= c + dc < cols}
  return out


def test_window_selection_matches_a_brute_force_reference(rng):
  for trial in range(20):
    rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    n = int(rng.integers(1, 4))
    scores = np.round(rng.random((n, rows * cols)), 1)  # ties
    scores[rng.random(scores.shape) > 0.8] = -np.inf
    finite = int(np.isfinite(scores).sum())
    if finite == 0:
      continue
    k = int(rng.integers(1, finite + 1))
    items, windows = acq.select_windows(scores, k, (rows, cols))
    assert list(zip(items.tolist(), windows.tolist())) == _select_reference(scores, k, rows,
                                                                            cols), trial
  with pytest.raises(ValueError, match="only 1 windows can still be labeled, fewer than k=2"):
    acq.select_windows(np.array([[1.0, -np.inf]]), 2, (1, 2))


def test_ripu_is_impurity_times_entropy_against_a_loop_reference(rng):
  lp = log_softmax(rng.normal(size=(3, 2, 6, 7, 4)) * 2, axis=-1)
  mean = logsumexp(lp, axis=0) - np.log(3)
  pred = mean.argmax(-1)
  impurity = np.zeros((2, 6, 7))
  for i in range(2):
    for y in range(6):
      for x in range(7):
        patch = pred[i, max(0, y - 1):y + 2, max(0, x - 1):x + 2].reshape(-1)
        p = np.bincount(patch, minlength=4) / patch.size
        impurity[i, y, x] = -np.sum(p[p > 0] * np.log(p[p > 0]))
  entropy = -np.sum(np.exp(mean) * mean, -1)
  got = np.asarray(acq.ripu(jnp.asarray(lp, jnp.float32)))
  np.testing.assert_allclose(np.asarray(acq.region_impurity(jnp.asarray(lp, jnp.float32))),
                             impurity, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got, impurity * entropy, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match=r"ripu scores pixels of images: it needs \[S, N, H, W, "
                     r"C\] log-probs"):
    acq.ripu(jnp.asarray(lp[:, :, 0, 0]))


def test_the_loop_labels_windows_under_a_pixel_budget(tmp_path, capsys):
  """Scenes with 4x4 windows: each round labels query_size windows of candidate images (only
  those pixels), never a window twice, and stops when the labeled pixels reach the budget in
  images' worth; a per-item acquisition is refused in one line."""
  from dal_jax import experiment
  from dal_jax import loop
  from tests.test_segmentation import _scenes_config

  config = _scenes_config(tmp_path / "data", acquisition="ripu", region_size=4, query_size=8,
                          budget=7)
  splits = experiment.load_splits(config)
  config.progress = True  # the round log shows the labeled pixels in images' worth
  records = experiment.run_experiment(config, str(tmp_path / "run"), splits=splits)[0]
  assert "labels    6.50" in capsys.readouterr().out
  # 6 images (6.0 images' worth) + 8 windows of 16 of 256 pixels = 0.5 image per round.
  assert [r["num_labels"] for r in records] == [6.0, 6.5, 7.0]
  assert records[-1]["stop"] == "budget"
  state = experiment.SeedRun(experiment.build(config, splits), 0,
                             str(tmp_path / "run" / "seed_0")).state
  labels = np.asarray(state.labels)
  asked = labels != loop.UNKNOWN
  assert asked.sum() == 7 * 16 * 16
  seen = set()
  for r in records[:-1]:
    assert len(r["selected"]) == len(r["selected_regions"]) == 8
    for i, (top, left, bottom, right) in zip(r["selected"], r["selected_regions"]):
      assert (bottom - top, right - left) == (4, 4) and (i, top, left) not in seen
      seen.add((i, top, left))
      np.testing.assert_array_equal(labels[i, top:bottom, left:right],
                                    splits.pool.y[i, top:bottom, left:right])
  partial = [i for i, _, _ in seen if not asked[i].all()]
  assert partial and all(np.asarray(state.labeled)[i] for i in partial)
  # pool_subsample counts images and query_size windows: 20 images of 16 windows for 100.
  from dal_jax import config as config_lib
  config_lib.check(_scenes_config(tmp_path / "data", region_size=4, query_size=100))
  with pytest.raises(ValueError, match=r"config.region_size=4 queries windows of \[H, W\] "
                     r"masks; task 'classification' has no such labels"):
    classes = _scenes_config(tmp_path / "data", region_size=4, task="classification")
    classes.train.early_stopping = "accuracy"
    config_lib.check(classes)
  with pytest.raises(ValueError, match=r"region queries \(region_size=4\) rank windows by a "
                     r"per-pixel score .*'coreset' is not one"):
    experiment.run_experiment(_scenes_config(tmp_path / "data", acquisition="coreset",
                                             region_size=4), str(tmp_path / "bad"),
                              splits=splits)


def test_foreground_random_puts_predicted_foreground_first_against_a_reference(rng):
  """u + [argmax of the mean prediction != background] with u the key's uniforms; candidates
  outside `where` are -inf, and a bad background index is refused."""
  logits = rng.normal(size=(3, 4, 6, 5, 4)) * 3
  lp = log_softmax(logits, axis=-1)
  key = jax.random.key(int(rng.integers(1 << 30)))
  got = np.asarray(acq.foreground_random_scores(key, jnp.asarray(lp, jnp.float32),
                                                background=2))
  pred = np.argmax(logsumexp(lp, axis=0), axis=-1)
  u = np.asarray(jax.random.uniform(key, pred.shape))
  np.testing.assert_allclose(got, u + (pred != 2), rtol=1e-6)
  assert got[pred != 2].min() > got[pred == 2].max()
  where = rng.random(pred.shape) > 0.5
  masked = np.asarray(acq.foreground_random_scores(key, jnp.asarray(lp, jnp.float32),
                                                   where=jnp.asarray(where)))
  assert np.isneginf(masked[~where]).all()
  with pytest.raises(ValueError, match=r"background=4 must be a class index in \[0, 4\)"):
    acq.foreground_random_scores(key, jnp.asarray(lp), background=4)
  # Whole images: the ones predicted all background come last.
  outputs = {"log_probs": jnp.asarray(lp, jnp.float32)}
  items = acq.acquire("foreground_random", outputs, key=key, k=int((pred != 2).any(
      axis=(1, 2)).sum()), where=jnp.ones(4, bool), background=2)
  assert (pred[np.asarray(items)] != 2).any(axis=(1, 2)).all()


def test_random_regions_are_uniform_and_foreground_regions_come_first(rng):
  """Random windows: every free window equally likely (a chi-square bound over 1400 draws);
  foreground_random windows: only windows with a predicted foreground pixel while any is
  left."""
  from dal_jax import loop

  n, h, w, size = 2, 8, 8, 4
  labels = np.full((n, h, w), loop.UNKNOWN, np.int32)
  labels[0, :4, :4] = 1  # window 0 of item 0 is labeled: never drawn
  state = loop.init_loop_state(jax.random.key(0), n, np.zeros(0, np.int64),
                               np.zeros((0, h, w), np.int32)).replace(labels=jnp.asarray(labels))
  config = loop.RoundConfig(query_size=1, region_size=size, budget=100)
  cands, where = jnp.arange(n), jnp.ones(n, bool)
  random = acq.get_acquisition("random")
  counts = np.zeros((n, 4), int)
  for t in range(1400):
    items, regions, _ = loop._select_regions(random, {}, state, cands, where, config,
                                             jax.random.key(t))
    counts[items[0], (regions[0, 0] // size) * 2 + regions[0, 1] // size] += 1
  assert counts[0, 0] == 0
  free = counts.reshape(-1)[1:]
  chi2 = float(((free - free.mean()) ** 2 / free.mean()).sum())
  assert chi2 < 24.3, counts  # 7 cells, 6 degrees of freedom: P(chi2 > 24.3) < 0.0005

  lp = np.full((1, n, h, w, 3), math.log(1e-3))
  lp[..., 0] = math.log(1 - 2e-3)  # background everywhere ...
  lp[0, 1, 5, 1] = [math.log(1e-3), math.log(1 - 2e-3), math.log(1e-3)]  # ... but one pixel
  fg = acq.get_acquisition("foreground_random")
  config = config._replace(query_size=2)
  for t in range(20):
    items, regions, _ = loop._select_regions(fg, {"log_probs": jnp.asarray(lp, jnp.float32)},
                                             state, cands, where, config, jax.random.key(t))
    assert (items[0], *regions[0]) == (1, 4, 0, 8, 4)


def _segments_reference(scores, segments, asked, reduction, q):
  n = scores.shape[0]
  width = segments.max() + 1
  out = np.full((n, width), -np.inf)
  for i in range(n):
    for s in range(width):
      sel = segments[i] == s
      if not sel.any() or asked[i][sel].any():
        continue
      v = np.sort(scores[i][sel])[::-1]
      out[i, s] = {"mean": v.mean(), "max": v.max(), "sum": v.sum(),
                   "top_q_mean": v[:max(1, math.ceil(round(q * v.size, 9)))].mean()}[reduction]
  return out


@pytest.mark.parametrize("reduction", acq.REDUCTIONS)
def test_superpixel_scores_and_choice_match_brute_force(rng, reduction):
  images = rng.random((3, 12, 16, 1))
  images[:, :6] += 2  # two halves of different brightness
  segments = acq.superpixels(images / 3, 4)
  # A partition of each image into consecutive numbers, about H·W / 16 of them.
  for seg in segments:
    assert sorted(np.unique(seg)) == list(range(seg.max() + 1)) and 3 <= seg.max() + 1 <= 20
  scores = np.round(rng.random((3, 12, 16)), 1)
  asked = np.zeros((3, 12, 16), bool)
  asked[0, 0, 0] = asked[2, 11, 15] = True
  got = acq.segment_scores(scores, segments, asked, reduction=reduction, q=0.3)
  np.testing.assert_allclose(got, _segments_reference(scores, segments, asked, reduction, 0.3))
  finite = int(np.isfinite(got).sum())
  k = int(rng.integers(1, finite + 1))
  items, chosen = acq.select_segments(got, k)
  order = sorted(((-got[i, s], i, s) for i in range(3) for s in range(got.shape[1])
                  if np.isfinite(got[i, s])))[:k]
  assert list(zip(items.tolist(), chosen.tolist())) == [(i, s) for _, i, s in order]
  with pytest.raises(ValueError, match="fewer than k"):
    acq.select_segments(got, finite + 1)
  # A pixel allowance: taken in order until the taken hold that many pixels.
  sizes = np.stack([np.bincount(seg.reshape(-1), minlength=got.shape[1]) for seg in segments])
  allowance = int(rng.integers(1, 60))
  items, chosen = acq.select_segments(got, finite, sizes=sizes, pixels=allowance)
  ranked = sorted(((-got[i, s], i, s) for i in range(3) for s in range(got.shape[1])
                   if np.isfinite(got[i, s])))
  want, held = [], 0
  for _, i, s in ranked:
    if held >= allowance:
      break
    want.append((i, s))
    held += sizes[i, s]
  assert list(zip(items.tolist(), chosen.tolist())) == want


def test_the_loop_labels_superpixels(tmp_path):
  """Superpixel queries label exactly the chosen superpixels' pixels, never one twice."""
  from dal_jax import experiment
  from dal_jax import loop
  from tests.test_segmentation import _scenes_config

  config = _scenes_config(tmp_path / "data", acquisition="entropy", region_size=4,
                          query_size=16, budget=7)
  config.region_shape = "superpixel"
  splits = experiment.load_splits(config)
  records = experiment.run_experiment(config, str(tmp_path / "run"), splits=splits)[0]
  run = experiment.build(config, splits)
  state = experiment.SeedRun(run, 0, str(tmp_path / "run" / "seed_0")).state
  labels = np.asarray(state.labels)
  segments = run.data.segments
  seen = set()
  assert [len(r["selected"]) for r in records[:-2]] == [16] * (len(records) - 2)
  for r in records[:-1]:
    assert 1 <= len(r["selected"]) == len(r["selected_superpixels"]) <= 16
    for i, s in zip(r["selected"], r["selected_superpixels"]):
      assert (i, s) not in seen
      seen.add((i, s))
      sel = segments[i] == s
      np.testing.assert_array_equal(labels[i][sel], splits.pool.y[i][sel])
  initial = int(np.asarray(state.acquired_round == 0).sum())
  asked = labels != loop.UNKNOWN
  assert asked.sum() == initial * 16 * 16 + sum(int((segments[i] == s).sum()) for i, s in seen)
  # The budget (7 images' worth of pixels) is reached; only the last superpixel passes it.
  last = records[-2]
  i, s = last["selected"][-1], last["selected_superpixels"][-1]
  assert 7 * 256 <= asked.sum() < 7 * 256 + (segments[i] == s).sum()
  assert records[-1]["stop"] == "budget"
  assert records[-1]["stop"] == "budget"
  # Superpixels need no grid: a size that does not divide the image stops only when nothing is
  # left to label.
  rc = loop.RoundConfig(query_size=5, region_size=3, region_shape="superpixel", budget=10**6)
  assert loop._stop_reason(state, {}, rc, "miou") is None
  done = state.replace(labels=jnp.zeros_like(state.labels))
  assert loop._stop_reason(done, {}, rc, "miou") == "pool_exhausted"
