"""The paper's representation test on Fashion-MNIST, against single-layer k-means features.

A DCGAN is trained on Fashion-MNIST's 60,000 training images (no labels; padded to 32x32, one
channel). Then a regularised linear L2-SVM is fitted with a budget of labelled training images
on: D's convolutional features (every block max-pooled to 4x4, concatenated), single-layer
k-means features (Coates and Ng: whitened 6x6 patches, triangle activation, quadrant pooling),
and raw pixels; accuracy is measured on the 10,000 test images.
Needs Debian's dataset-fashion-mnist (make sysdeps).

    .venv/bin/python bench/representation.py [--epochs 5] [--width 128] [--labels 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from training.evaluate import representation_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--width", type=int, default=128, help="D and G channels at 4x4")
    ap.add_argument("--labels", type=int, default=10_000)
    ap.add_argument("--kmeans", type=int, default=800, help="k-means centroids")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        r = representation_test(d, labels=args.labels, epochs=args.epochs, width=args.width, kmeans_k=args.kmeans)
    minutes = (time.perf_counter() - t0) / 60
    print(f"label budget: {r.labels} training images; test images: {r.test_images}; "
          f"DCGAN {args.epochs} epochs at width {args.width}; {minutes:.1f} min")
    print(f"{'features':<46}{'dims':>8}{'accuracy':>10}")
    print(f"{'DCGAN discriminator, all layers, 4x4 max-pool':<46}{r.dcgan_features:>8}{r.dcgan_accuracy:>10.4f}")
    print(f"{f'k-means, {args.kmeans} centroids (Coates and Ng)':<46}{r.kmeans_features:>8}{r.kmeans_accuracy:>10.4f}")
    print(f"{'raw pixels':<46}{784:>8}{r.pixels_accuracy:>10.4f}")
    print(f"labels: {r.labels}")
    print(f"dcgan accuracy: {r.dcgan_accuracy:.4f}")
    print(f"kmeans accuracy: {r.kmeans_accuracy:.4f}")
    print(f"pixels accuracy: {r.pixels_accuracy:.4f}")


if __name__ == "__main__":
    main()
