"""Image sources for training, as tensorflow-datasets builders.

- `cropjax.datasets.annotated.AnnotatedCrops`: a DATASET folder written by
  `scripts/annotate.py` (image, crop, angle), `train` and `validation`.
- `cropjax.datasets.photos.Photos`: plain photos without metadata (the image
  source for crop pairs): a folder of your own (config `folder`) or the embedded
  `demo` source (procedural images and scikit-image's photos, no user data).
- `cropjax.datasets.splits`: the deterministic, near-duplicate-aware split.

Importing this package does not import TensorFlow; the builder modules do.
"""
