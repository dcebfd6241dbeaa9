"""A folder of one's own images for trying ``dal-jax``: Fashion-MNIST test images as PNG files.

  python -m experiments.fashion_folder OUT [--n 300]
      writes OUT/images/<shoot>/<day>/img_NNNN.png and OUT/truth.csv (id,label)
  python -m experiments.fashion_folder --answer QUERY_CSV OUT/truth.csv > answers.csv
      a scripted annotator: the true label of every id in a dal-jax query file

The images come from Debian's ``dataset-fashion-mnist`` package (Xiao, Rasul & Vollgraf 2017).
"""

import argparse
import csv
import os
import sys

CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "boot"]
FMNIST = "/usr/share/datasets/fashion-mnist"


def write_folder(out: str, n: int = 300) -> dict[str, str]:
  """Writes the first ``n`` test images under ``out/images`` and ``out/truth.csv``; returns
  ``{id: class name}``."""
  from PIL import Image

  from dal_jax import _idx_builder

  x = _idx_builder.read_idx(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"))[:n]
  y = _idx_builder.read_idx(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz"))[:n]
  truth = {}
  for i in range(len(y)):
    rel = f"shoot_{i % 3}/day_{i % 2}/img_{i:04d}.png"
    path = os.path.join(out, "images", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(x[i]).save(path)
    truth[rel] = CLASSES[y[i]]
  with open(os.path.join(out, "truth.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["id", "label"])
    w.writerows(truth.items())
  print(f"wrote {len(y)} images to {os.path.join(out, 'images')} and their classes to "
        f"{os.path.join(out, 'truth.csv')}", file=sys.stderr)
  return truth


def answers_file(query_csv: str, truth: dict[str, str], out: str) -> str:
  """Writes the true class of every id of a query file to ``out`` (``id,label``); returns it."""
  with open(query_csv, encoding="utf-8") as f:
    ids = [r["id"] for r in csv.DictReader(f)]
  with open(out, "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows([["id", "label"], *([i, truth[i]] for i in ids)])
  return out


def answer(query_csv: str, truth_csv: str) -> None:
  with open(truth_csv, encoding="utf-8") as f:
    truth = {r["id"]: r["label"] for r in csv.DictReader(f)}
  with open(query_csv, encoding="utf-8") as f:
    ids = [r["id"] for r in csv.DictReader(f)]
  w = csv.writer(sys.stdout)
  w.writerow(["id", "label"])
  for i in ids:
    w.writerow([i, truth[i]])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("paths", nargs="+")
  ap.add_argument("--n", type=int, default=300)
  ap.add_argument("--answer", action="store_true")
  args = ap.parse_args()
  if args.answer:
    answer(*args.paths)
  else:
    write_folder(args.paths[0], args.n)


if __name__ == "__main__":
  main()
