"""One run over several processes (JAX's multi-process runtime, gloo collectives on CPU):
2 processes x 2 CPU devices on 127.0.0.1 (reading the pool from disk) select and score exactly
as 1 process x 4 devices (pool in memory), only process 0 writes, the workdir lock holds for the
run, and a killed run resumes."""

import json
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
TINY = ["--config.pool_size=300", "--config.test_size=200", "--config.val_size=100",
        "--config.initial_size=10", "--config.query_size=5", "--config.mc_samples=4",
        "--config.train.max_steps=20", "--config.train.eval_every=10", "--config.budget=25",
        "--config.acquisition=bald"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir, *extra):
  return [sys.executable, "-m", "experiments.run", "--config=experiments/configs/digits.py",
          f"--workdir={workdir}", *TINY, *extra]


def _start(workdir, processes, *extra):
  """The README's multi-process command, one per process (the launcher is a local loop)."""
  port = _free_port()
  env = {**ENV, "JAX_NUM_CPU_DEVICES": str(4 // processes)}
  return [subprocess.Popen(
      _command(workdir, "--config.distributed=True", f"--coordinator_address=127.0.0.1:{port}",
               f"--num_processes={processes}", f"--process_id={i}", *extra),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(processes)]


def _records(workdir):
  with open(os.path.join(workdir, "seed_0", "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _wait(procs, timeout=600):
  outs = [p.communicate(timeout=timeout) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def test_two_processes_select_as_one_process_and_a_killed_run_resumes_the_same(tmp_path):
  one = subprocess.run(_command(tmp_path / "one"), cwd=REPO,
                       env={**ENV, "JAX_NUM_CPU_DEVICES": "4"}, capture_output=True, text=True,
                       timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  # Two processes with the pool on disk: each reads only its own devices' rows of every chunk.
  outs = _wait(_start(tmp_path / "two", 2, "--config.pool_on_disk=True"))
  want = [(r["selected"], r["accuracy"], r["num_devices"]) for r in _records(tmp_path / "one")]
  got = [(r["selected"], r["accuracy"], r["num_devices"]) for r in _records(tmp_path / "two")]
  assert got == want and len(want) == 4 and want[0][2] == 4
  # Both processes ran the same rounds; only process 0 wrote (one metrics line per round).
  rounds = [[line.split("|")[0] for line in out.splitlines() if line.startswith("[bald")]
            for out, _ in outs]
  assert rounds[0] == rounds[1] and len(rounds[0]) == 4
  assert sorted(os.listdir(tmp_path / "two")) == sorted(
      os.listdir(tmp_path / "one") + ["pool.array_record", "pool.json"])
  # Killed after two rounds (one process dies, the scheduler ends the other), then resumed.
  procs = _start(tmp_path / "run", 2)
  metrics = tmp_path / "run" / "seed_0" / "metrics.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
      break
    time.sleep(0.05)
  assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
  procs[1].kill()
  procs[0].kill()
  for p in procs:
    p.communicate(timeout=60)
  assert 2 <= len(metrics.read_text().splitlines()) < 4
  outs = _wait(_start(tmp_path / "run", 2))
  assert "resuming after round" in outs[0][0] and "resuming after round" in outs[1][0]
  assert [r["selected"] for r in _records(tmp_path / "run")] == [s for s, _, _ in want]
  # A second run on the same workdir while one holds it is refused in one line.
  from dal_jax import workdir as workdir_lib
  lock = workdir_lib.WorkdirLock(str(tmp_path / "run"))
  try:
    refused = subprocess.run(_command(tmp_path / "run"), cwd=REPO, env=ENV, capture_output=True,
                             text=True, timeout=300)
  finally:
    lock.release()
  assert refused.returncode == 2 and "in use by another dal_jax process" in refused.stderr


def test_a_project_refuses_several_processes_in_one_line(tmp_path):
  out = subprocess.run([sys.executable, "-m", "dal_jax", "status", str(tmp_path)], cwd=REPO,
                       env={**ENV, "JAX_NUM_PROCESSES": "2"}, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 2 and out.stderr.strip() == (
      "error: dal-jax projects run in one process (JAX_NUM_PROCESSES is 2); run it without the "
      "multi-process settings")
