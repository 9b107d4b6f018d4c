"""The paper's representation test (Table 1's protocol) on Fashion-MNIST, against single-layer
k-means features, at 400 labels per class and at every label.

A DCGAN is trained on Fashion-MNIST's 60,000 training images (no labels; padded to 32x32, one
channel). Then, for each label budget, a linear L2-SVM (squared hinge, one-vs-rest, solved with
L-BFGS; C chosen by 3-fold cross-validation on the labelled training images of the budget's
first draw only) is fitted on: D's convolutional features (every block
max-pooled to 4x4, concatenated), single-layer k-means features (Coates and Ng: whitened 6x6
patches, triangle activation, quadrant pooling; fitted on the same unlabelled images D saw), and
raw pixels. Accuracy is on the 10,000 test images; 400 per class is 10 random draws (mean and
standard deviation, as the paper's Table 1), every label one fit. The feature budgets are close
(D 3,584 dimensions at width 128, k-means 3,200 at 800 centroids).
Needs Debian's dataset-fashion-mnist (make sysdeps).

    .venv/bin/python bench/representation.py [--epochs 5] [--width 128] [--kmeans 800] [--draws 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from training.evaluate import representation_test

NAMES = {"dcgan": "DCGAN discriminator, all layers, 4x4 max-pool", "kmeans": "k-means (Coates and Ng)",
         "pixels": "raw pixels"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--width", type=int, default=128, help="D and G channels at 4x4")
    ap.add_argument("--kmeans", type=int, default=800, help="k-means centroids")
    ap.add_argument("--per-class", type=int, default=400)
    ap.add_argument("--draws", type=int, default=10)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        r = representation_test(d, per_class=(args.per_class, None), draws=args.draws, epochs=args.epochs,
                                width=args.width, kmeans_k=args.kmeans)
    minutes = (time.perf_counter() - t0) / 60
    dims = {"dcgan": r.dcgan_features, "kmeans": r.kmeans_features, "pixels": 784}
    print(f"test images: {r.test_images}; DCGAN {args.epochs} epochs at width {args.width}; {minutes:.1f} min")
    for regime in r.regimes:
        print(f"\n{regime.name}: {regime.labels} labelled images, {len(regime.accuracy['dcgan'])} draw(s)")
        print(f"{'features':<48}{'dims':>7}{'accuracy':>18}  C chosen")
        for f, name in NAMES.items():
            print(f"{name:<48}{dims[f]:>7}{regime.mean(f):>10.4f} ± {regime.std(f):.4f}  "
                  f"{sorted(set(regime.c[f]))}")
    few, every = r.regimes
    tag = f"{args.per_class} per class"
    print()
    print(f"dcgan accuracy ({tag}): {few.mean('dcgan'):.4f} ± {few.std('dcgan'):.4f}")
    print(f"k-means accuracy ({tag}): {few.mean('kmeans'):.4f} ± {few.std('kmeans'):.4f}")
    print(f"pixels accuracy ({tag}): {few.mean('pixels'):.4f} ± {few.std('pixels'):.4f}")
    print(f"dcgan accuracy (all labels): {every.mean('dcgan'):.4f}")
    print(f"k-means accuracy (all labels): {every.mean('kmeans'):.4f}")
    print(f"pixels accuracy (all labels): {every.mean('pixels'):.4f}")


if __name__ == "__main__":
    main()
