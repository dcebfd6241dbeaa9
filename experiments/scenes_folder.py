"""A folder of one's own images *with masks* for trying ``dal-jax --task segmentation``.

  python -m experiments.scenes_folder OUT [--n 60] [--size 32]
      writes OUT/images/scene_NNNN.png (1-4 Fashion-MNIST items on a black canvas), their true
      masks OUT/masks/scene_NNNN.png (index PNGs: 0 background, class + 1 on an item's pixels)
      and OUT/classes.txt; OUT is also a ``masks:OUT`` dataset for experiments
  python -m experiments.scenes_folder --answer QUERY_CSV OUT
      a scripted annotator: copies the true mask of every image of a dal-jax segmentation query
      into the query's answers folder (the CSV's ``answer`` column); for a detection query
      (``predicted_boxes`` column) writes QUERY_answer.json, a COCO file of the true boxes

OUT/annotations.json holds every image's true boxes (COCO; the item classes without the
background, also in OUT/box_classes.txt), so OUT is also a ``coco:OUT`` dataset and a pool for
``--task detection``.

The scenes are :func:`dal_jax.scenes.compose_scenes` of Fashion-MNIST test images (Debian's
``dataset-fashion-mnist`` package, Xiao, Rasul & Vollgraf 2017).
"""

import argparse
import csv
import json
import os
import shutil
import sys

from experiments.fashion_folder import CLASSES
from experiments.fashion_folder import FMNIST

SCENE_CLASSES = ["background", *CLASSES]


def write_folder(out: str, n: int = 60, size: int = 32, seed: int = 0) -> None:
  """Writes ``n`` scenes and their masks under ``out`` (see the module docs)."""
  from PIL import Image

  from dal_jax import _idx_builder
  from dal_jax import mask_answers
  from dal_jax import scenes

  x = _idx_builder.read_idx(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"))[:2000]
  y = _idx_builder.read_idx(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz"))[:2000]
  made = scenes.compose_scenes(x, y, n, seed=seed, size=size)
  for d in ("images", "masks"):
    os.makedirs(os.path.join(out, d), exist_ok=True)
  for i in range(n):
    Image.fromarray(made.x[i, ..., 0]).save(os.path.join(out, "images", f"scene_{i:04d}.png"))
    with open(os.path.join(out, "masks", f"scene_{i:04d}.png"), "wb") as f:
      f.write(mask_answers.mask_png(made.masks[i].astype("int32")))
  with open(os.path.join(out, "classes.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(SCENE_CLASSES) + "\n")
  from dal_jax import box_answers
  items = [(f"scene_{i:04d}.png", [r for r in made.boxes[i].tolist() if r[0] >= 0], None)
           for i in range(n)]
  with open(os.path.join(out, "annotations.json"), "w", encoding="utf-8") as f:
    json.dump(box_answers.coco_file(items, CLASSES, (size, size)), f)
  with open(os.path.join(out, "box_classes.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(CLASSES) + "\n")
  print(f"wrote {n} scenes to {os.path.join(out, 'images')} and their masks to "
        f"{os.path.join(out, 'masks')}", file=sys.stderr)


def answer(query_csv: str, folder: str) -> int:
  """Copies the true mask of each queried image to its answer path (a detection query: writes
  the queried images' true boxes as COCO JSON beside the query); returns the count."""
  with open(query_csv, encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  if rows and "predicted_boxes" in rows[0]:
    with open(os.path.join(folder, "annotations.json"), encoding="utf-8") as f:
      coco = json.load(f)
    asked = {r["id"] for r in rows}
    images = [im for im in coco["images"] if im["file_name"] in asked]
    keep = {im["id"] for im in images}
    coco.update(images=images,
                annotations=[a for a in coco["annotations"] if a["image_id"] in keep])
    with open(query_csv[:-4] + "_answer.json", "w", encoding="utf-8") as f:
      json.dump(coco, f)
    return len(images)
  for r in rows:
    target = os.path.join(os.path.dirname(query_csv), r["answer"])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(os.path.join(folder, "masks", r["id"]), target)
  return len(rows)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("paths", nargs="+")
  ap.add_argument("--n", type=int, default=60)
  ap.add_argument("--size", type=int, default=32)
  ap.add_argument("--answer", action="store_true")
  args = ap.parse_args()
  if args.answer:
    print(f"answered {answer(*args.paths)} images", file=sys.stderr)
  else:
    write_folder(args.paths[0], args.n, args.size)


if __name__ == "__main__":
  main()
