"""``dal-jax``: label your own data (also ``python -m dal_jax``).

  dal-jax init PROJECT --pool PATH --classes a,b,c [--config FILE] [--set field=value ...]
  dal-jax query PROJECT [-k 20] [--acquisition NAME]
  dal-jax ingest PROJECT FILE          # a CSV (id,label), a Label Studio JSON export, or a
                                       # folder of <id>.png masks (segmentation)
  dal-jax status PROJECT
  dal-jax export PROJECT
  dal-jax log PROJECT                  # the label log as JSON lines

See :mod:`dal_jax.project` for what each step does and the files it writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from dal_jax import _commandline

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="dal-jax", description="Active learning on your own data: query -> annotate -> "
      "ingest, with nothing ever lost.")
  p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
  p.add_argument("--quiet", action="store_true", help="no progress output")
  sub = p.add_subparsers(dest="command", required=True)

  init = sub.add_parser("init", help="create a project from a pool of images or arrays")
  init.add_argument("project")
  init.add_argument("--pool", required=True,
                    help="a folder of images, an .npy/.npz array, or a .csv/.jsonl manifest")
  classes = init.add_mutually_exclusive_group(required=True)
  classes.add_argument("--classes", help="comma-separated class names")
  classes.add_argument("--classes-file", help="a text file with one class name per line")
  init.add_argument("--config", help="a config file (get_config(), as experiments/configs/*.py)")
  init.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field, e.g. --set model=gal_cnn (repeatable)")
  init.add_argument("--image-size", default="28x28", help="HxW every image is resized to")
  init.add_argument("--rgb", action="store_true", help="decode images as RGB (default: gray)")
  init.add_argument("--labels-from-folders", action="store_true",
                    help="images under a folder named like a class start labeled")
  init.add_argument("--cold-start", default="random",
                    choices=["random", "kmeans", "coreset", "typiclust", "probcover"],
                    help="how the first query is chosen when nothing is labeled yet")
  init.add_argument("--data-dir", help="tfds data directory of the decoded-pool cache")
  init.add_argument("--task", default="classification",
                    choices=["classification", "segmentation", "detection"],
                    help="what an answer is: a class per image, a mask (segmentation: the "
                    "first class is the background), or boxes (detection)")

  query = sub.add_parser("query", help="train on the labels so far and choose what to label")
  query.add_argument("project")
  query.add_argument("-k", type=int, default=None, help="items to query (default: query_size)")
  query.add_argument("--acquisition", help="acquisition / method for this and later queries")

  ingest = sub.add_parser("ingest", help="add the annotator's answers to the label log")
  ingest.add_argument("project")
  ingest.add_argument("file", help="a CSV with id,label columns, a Label Studio JSON export, "
                      "or (segmentation) a folder of <id>.png masks")

  status = sub.add_parser("status", help="labels, classes, accuracy estimate, learning curve")
  status.add_argument("project")

  export = sub.add_parser("export", help="train on every label; save the model and predictions")
  export.add_argument("project")

  log = sub.add_parser("log", help="print the label log (every answer, withdrawal and skip) as "
                       "JSON lines")
  log.add_argument("project")
  return p


def _overrides(items: list[str]) -> dict[str, str]:
  out = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"--set {item!r}: expected FIELD=VALUE")
    k, v = item.split("=", 1)
    out[k.strip()] = v.strip()
  return out


def _classes(args) -> list[str]:
  if args.classes is not None:
    return args.classes.split(",")
  try:
    with open(args.classes_file, encoding="utf-8") as f:
      return [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise ValueError(f"--classes-file: {e}") from None


def _image_size(text: str) -> tuple[int, int]:
  try:
    h, w = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ValueError(f"--image-size {text!r}: expected HxW, e.g. 28x28") from None
  return h, w


INTERRUPTED = ("interrupted — the project is as it was before this command (its state commits "
               "as a whole); run the command again")


def run(argv: list[str]) -> int:
  args = _parser().parse_args(argv)
  try:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING if args.debug else absl_logging.FATAL)
    if args.quiet:
      import tensorflow_datasets as tfds
      tfds.disable_progress_bar()
    from dal_jax import project as project_lib
  except KeyboardInterrupt:
    print("\n" + INTERRUPTED, file=sys.stderr)
    return 130

  progress = not args.quiet
  if os.environ.get("JAX_NUM_PROCESSES", "1").strip() not in ("", "1"):
    print("error: dal-jax projects run in one process (JAX_NUM_PROCESSES is "
          f"{os.environ['JAX_NUM_PROCESSES']}); run it without the multi-process settings",
          file=sys.stderr)
    return 2
  try:
    if args.command == "init":
      p = project_lib.create(args.project, pool=args.pool, classes=_classes(args),
                             config_file=args.config, overrides=_overrides(args.set),
                             image_size=_image_size(args.image_size),
                             channels=3 if args.rgb else 1,
                             labels_from_folders=args.labels_from_folders,
                             cold_start=args.cold_start, data_dir=args.data_dir,
                             task=args.task, progress=progress)
      p.close()
      print(f"next: dal-jax query {args.project} -k 20")
      return 0
    with project_lib.open_project(args.project, progress=progress) as p:
      if args.command == "query":
        path = p.query(args.k, acquisition=args.acquisition)
        print(path)
      elif args.command == "ingest":
        print(json.dumps(p.ingest(args.file), sort_keys=True))
      elif args.command == "status":
        print(json.dumps(p.status(), indent=1, sort_keys=True))
      elif args.command == "export":
        print(p.export())
      elif args.command == "log":
        p.write_log(sys.stdout)
    return 0
  except KeyboardInterrupt:
    print("\n" + INTERRUPTED, file=sys.stderr)
    return 130
  except (ValueError, OSError) as e:
    if args.debug:
      traceback.print_exc()
    print(f"error: {_commandline.one_line(e)}", file=sys.stderr)
    return 2
  except Exception as e:  # a bug: still one line (the traceback with --debug)
    if args.debug:
      traceback.print_exc()
    print(f"error: internal error ({type(e).__name__}: {_commandline.one_line(e)}); nothing "
          "was committed; run with --debug for the traceback and report it", file=sys.stderr)
    return 3


def main() -> None:
  _commandline.exit_on_ctrl_c(INTERRUPTED)
  sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
  main()
