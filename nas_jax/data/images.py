"""Image classification data: loading, splits, augmentation, batching, prefetch.

Sources (``load_dataset(name)``):

* ``digits``: scikit-learn's shipped 8x8 grey digits (1,797 images, 10
  classes). The embedded default; works offline.
* ``cifar10``, ``cifar100`` or any tfds image dataset by its tfds name, read
  with ``tfds.data_source`` (array_record files, no TensorFlow needed) from
  ``data_dir``. Preparing a tfds dataset once needs TensorFlow
  (``pip install nas_jax[prepare]``).
* ``imagefolder:PATH``: class subfolders of PNG/JPEG images (``PATH/<class>/``
  or ``PATH/train/<class>/``); the test split comes from ``PATH/test/<class>/``
  when present, else it is carved out of the images.

The search/validation split (``valid``) is always carved out of the training
split, as ENAS/NAO/DARTS do; the test split is never touched by a search.
Images are stored as ``uint8`` NHWC; batches are float32, normalised with the
per-channel mean/std of the ``train`` split.

Batching is a pure function of ``(seed, epoch, step)``: ``epoch_batches`` draws
one permutation per epoch and the augmentation of each batch from its own
generator, so a resumed run continues from ``(epoch, step)`` with exactly the
batches an uninterrupted run would see.

Example:
    >>> ds = load_dataset("digits", train_size=64)
    >>> aug = default_augment(ds)
    >>> for batch in prefetch(epoch_batches(ds, "train", 32, seed=0, epoch=0,
    ...                                     augment=aug)):
    ...   print(batch["image"].shape, batch["label"].dtype)
    (32, 8, 8, 1) int32
    (32, 8, 8, 1) int32
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import queue
import threading
from typing import Any, Iterable, Iterator

import numpy as np

SPLITS = ("train", "valid", "test")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass
class ImageDataset:
  """An in-memory image classification dataset.

  Attributes:
    name: the name it was loaded by (e.g. ``"digits"``).
    num_classes: number of classes; labels are ``0..num_classes-1``.
    image_shape: ``(H, W, C)``.
    mean: float32[C] per-channel mean of the ``train`` split, pixels in [0, 1].
    std: float32[C] per-channel standard deviation, same scale.
    images: split name -> uint8[N, H, W, C].
    labels: split name -> int32[N].
    class_names: readable class names (may be empty).
    flip: whether horizontal flips are a valid augmentation (False for digits).
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: np.ndarray
  std: np.ndarray
  images: dict[str, np.ndarray]
  labels: dict[str, np.ndarray]
  class_names: tuple[str, ...] = ()
  flip: bool = True

  def size(self, split: str) -> int:
    """Number of examples of ``split`` (``"train+valid"`` joins splits)."""
    return sum(len(self.labels[s]) for s in _split_names(self, split))

  def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 images, int32 labels)`` of ``split``; ``"a+b"`` concatenates."""
    names = _split_names(self, split)
    if len(names) == 1:
      return self.images[names[0]], self.labels[names[0]]
    return (np.concatenate([self.images[s] for s in names]),
            np.concatenate([self.labels[s] for s in names]))

  def summary(self) -> str:
    """One line: name, shape, classes and split sizes."""
    sizes = ", ".join(f"{s} {len(self.labels[s])}" for s in self.labels)
    return (f"{self.name}: {self.image_shape[0]}x{self.image_shape[1]}x"
            f"{self.image_shape[2]}, {self.num_classes} classes, {sizes}")


def _split_names(ds: ImageDataset, split: str) -> list[str]:
  names = split.split("+")
  for s in names:
    if s not in ds.labels:
      raise ValueError(f"unknown split {s!r} of dataset {ds.name!r}; "
                       f"choose among {sorted(ds.labels)} (join with '+')")
  return names


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None,
                 valid_fraction: float = 0.1, valid_size: int | None = None,
                 train_size: int | None = None, test_size: int | None = None,
                 test_fraction: float = 0.2, seed: int = 0,
                 image_size: tuple[int, int] | None = None) -> ImageDataset:
  """Loads an image dataset and carves the validation split out of training.

  Args:
    name: ``"digits"``, ``"cifar10"``, ``"cifar100"``, any tfds image dataset
      name, or ``"imagefolder:PATH"``.
    data_dir: tfds data directory (default: tfds' own, ``~/tensorflow_datasets``
      or ``$TFDS_DATA_DIR``). Unused by ``digits`` and ``imagefolder``.
    valid_fraction: fraction of the training split held out as ``valid`` (the
      search signal). ENAS and NAO hold out 5,000 of CIFAR-10's 50,000 (0.1).
    valid_size: absolute size of ``valid``; overrides ``valid_fraction``.
    train_size: keep at most this many ``train`` examples (after carving).
    test_size: keep at most this many ``test`` examples.
    test_fraction: fraction carved out as ``test`` when the source has no test
      split (``digits``; an image folder without ``test/``).
    seed: seed of the deterministic split (and of the subsets).
    image_size: ``(H, W)`` to resize imagefolder images to (default: keep;
      then all images must have one size).

  Returns:
    An ``ImageDataset`` with splits ``train``, ``valid`` and ``test``.

  Raises:
    ValueError: unknown dataset, unprepared tfds dataset (offline, no
      TensorFlow), bad fractions or sizes, malformed image folder.

  Example:
    >>> ds = load_dataset("digits", valid_fraction=0.2, seed=0)
    >>> ds.image_shape, ds.num_classes
    ((8, 8, 1), 10)
    >>> ds.size("train"), ds.size("valid"), ds.size("test")
    (1150, 288, 359)
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
  if not 0.0 <= valid_fraction < 1.0:
    raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  for label, v in (("valid_size", valid_size), ("train_size", train_size),
                   ("test_size", test_size)):
    if v is not None and (not isinstance(v, (int, np.integer)) or v < 0):
      raise ValueError(f"{label} must be a non-negative int or None, got {v!r}")
  rng = np.random.default_rng(seed)
  flip = True
  if name == "digits":
    x, y, class_names = _load_digits()
    (x, y), (x_test, y_test) = _carve(x, y, test_fraction, None, rng)
    flip = False
  elif name.startswith("imagefolder:"):
    path = name[len("imagefolder:"):]
    x, y, x_test, y_test, class_names = _load_imagefolder(path, image_size)
    if x_test is None:
      (x, y), (x_test, y_test) = _carve(x, y, test_fraction, None, rng)
  else:
    x, y, x_test, y_test, class_names = _load_tfds(name, data_dir)
    if x_test is None:
      (x, y), (x_test, y_test) = _carve(x, y, test_fraction, None, rng)
  (x_train, y_train), (x_valid, y_valid) = _carve(x, y, valid_fraction,
                                                  valid_size, rng)
  if train_size is not None:
    x_train, y_train = random_subset(x_train, y_train, train_size, rng)
  if test_size is not None:
    x_test, y_test = random_subset(x_test, y_test, test_size, rng)
  if len(y_train) == 0:
    raise ValueError(f"dataset {name!r} has an empty train split; "
                     "lower valid_fraction/valid_size or raise train_size")
  labels_max = max(int(y.max(initial=-1)) for y in (y_train, y_valid, y_test))
  num_classes = max(len(class_names), labels_max + 1)
  pixels = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64) / 255.0
  mean = pixels.mean(0).astype(np.float32)
  std = np.maximum(pixels.std(0), 1e-3).astype(np.float32)
  return ImageDataset(
      name=name, num_classes=num_classes,
      image_shape=tuple(int(d) for d in x_train.shape[1:]),
      mean=mean, std=std,
      images={"train": x_train, "valid": x_valid, "test": x_test},
      labels={"train": y_train, "valid": y_valid, "test": y_test},
      class_names=tuple(class_names), flip=flip)


def as_dataset(dataset: "str | ImageDataset", **load_kwargs: Any) -> ImageDataset:
  """``dataset`` itself when it is already loaded, else ``load_dataset(dataset, **load_kwargs)``.

  Example:
      >>> ds = as_dataset("digits", valid_fraction=0.1)
      >>> as_dataset(ds) is ds
      True
  """
  if isinstance(dataset, ImageDataset):
    return dataset
  return load_dataset(dataset, **load_kwargs)


def random_subset(x: np.ndarray, y: np.ndarray, n: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """``n`` examples drawn at random by ``rng``, in their original order (all if ``n >= len(y)``).

  Random, not the first ``n``: sources such as image folders come sorted by
  class, so a prefix would hold one or two classes.

  Example:
      >>> x, y = np.arange(100), np.repeat(np.arange(10), 10)
      >>> xs, ys = random_subset(x, y, 20, np.random.default_rng(0))
      >>> len(ys), len(np.unique(ys)) > 2, bool(np.all(np.diff(xs) > 0))
      (20, True, True)
  """
  if n >= len(y):
    return x, y
  keep = np.sort(rng.permutation(len(y))[:n])
  return x[keep], y[keep]


def _carve(x, y, fraction, size, rng):
  """Splits ``(x, y)`` by a random permutation into (rest, held-out)."""
  n = len(y)
  k = int(round(n * fraction)) if size is None else int(size)
  if k > n:
    raise ValueError(f"cannot hold out {k} examples of {n}; lower the size")
  perm = rng.permutation(n)
  held, rest = np.sort(perm[:k]), np.sort(perm[k:])
  return (x[rest], y[rest]), (x[held], y[held])


def _load_digits():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  bunch = load_digits()
  # Pixel values are 0..16; map them to uint8 0..255 without loss.
  x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  y = bunch.target.astype(np.int32)
  return x, y, tuple(str(c) for c in bunch.target_names)


def _list_images(root: pathlib.Path, classes: list[str]):
  files, labels = [], []
  for label, cls in enumerate(classes):
    names = sorted(p for p in (root / cls).iterdir()
                   if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS)
    files += names
    labels += [label] * len(names)
  return files, np.asarray(labels, np.int32)


def _read_images(files: list[pathlib.Path], mode: str,
                 image_size: tuple[int, int] | None) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def read(path):
    try:
      with Image.open(path) as im:
        im = im.convert(mode)
        if image_size is not None and im.size != (image_size[1], image_size[0]):
          im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
        return np.asarray(im, np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for damaged files
      raise ValueError(f"imagefolder: cannot read {path} ({e}); remove or replace the "
                       "file") from None

  with concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as ex:
    arrays = list(ex.map(read, files, chunksize=256))
  shapes = {a.shape for a in arrays}
  if len(shapes) > 1:
    raise ValueError(f"images have different sizes {sorted(shapes)[:3]}...; "
                     "pass image_size=(H, W) to resize them")
  x = np.stack(arrays)
  return x[..., None] if x.ndim == 3 else x


def _load_imagefolder(path: str, image_size):
  root = pathlib.Path(path).expanduser()
  if not root.is_dir():
    raise ValueError(f"imagefolder: {str(root)!r} is not a directory; expected "
                     "PATH/<class>/*.png|jpg (optionally PATH/train and PATH/test)")
  train_root = root / "train" if (root / "train").is_dir() else root
  test_root = root / "test" if (root / "test").is_dir() else None
  classes = sorted(p.name for p in train_root.iterdir()
                   if p.is_dir() and not (train_root == root and p.name in
                                          ("train", "test")))
  if not classes:
    raise ValueError(f"imagefolder: no class subfolders in {str(train_root)!r}; "
                     "expected PATH/<class>/*.png|jpg")
  files, y = _list_images(train_root, classes)
  if not files:
    raise ValueError(f"imagefolder: no .png/.jpg/.jpeg files under "
                     f"{str(train_root)!r}")
  empty = [c for i, c in enumerate(classes) if not np.any(y == i)]
  if empty:
    raise ValueError(f"imagefolder: class folder(s) {empty[:3]} of {str(train_root)!r} hold no "
                     ".png/.jpg/.jpeg images; add images or remove the folder")
  if len(classes) < 2:
    raise ValueError(f"imagefolder: {str(train_root)!r} has one class ({classes[0]!r}); a "
                     "classifier needs at least 2 class subfolders")
  try:
    with _open_first(files[0]) as im:
      mode = "L" if im.mode in ("L", "1", "I;16", "I", "F") else "RGB"
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(f"imagefolder: cannot read {files[0]} ({e}); remove or replace the "
                     "file") from None
  x = _read_images(files, mode, image_size)
  x_test = y_test = None
  if test_root is not None:
    extra = sorted(p.name for p in test_root.iterdir()
                   if p.is_dir() and p.name not in classes)
    if extra:
      raise ValueError(f"imagefolder: test classes {extra} are not among the "
                       f"training classes of {str(train_root)!r}")
    test_classes = [c for c in classes if (test_root / c).is_dir()]
    test_files, test_idx = _list_images(test_root, test_classes)
    if test_files:
      x_test = _read_images(test_files, mode, image_size)
      y_test = np.asarray([classes.index(test_classes[i]) for i in test_idx],
                          np.int32)
      if x_test.shape[1:] != x.shape[1:]:
        raise ValueError(f"imagefolder: test images {x_test.shape[1:]} differ "
                         f"from train images {x.shape[1:]}; pass image_size")
  return x, y, x_test, y_test, tuple(classes)


def _open_first(path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return Image.open(path)


_TFDS_ALIASES = {"cifar10": "cifar10", "cifar100": "cifar100"}


def _tfds_error(name: str, where: str, why: str) -> ValueError:
  return ValueError(
      f"dataset {name!r} is not prepared in {where} and cannot be prepared "
      f"here ({why}); prepare it once with TensorFlow (`pip install "
      f"nas_jax[prepare]`, then `tfds.builder({name!r}, data_dir=...)"
      f".download_and_prepare(file_format='array_record')`, e.g. in Colab) and "
      f"pass --data_dir, or use --dataset digits offline")


def _load_tfds(name: str, data_dir):
  """Materialises a tfds image dataset to numpy through ``tfds.data_source``."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError(f"dataset {name!r} needs tensorflow-datasets "
                     f"(`pip install tensorflow-datasets`): {e}") from None
  tfds_name = _TFDS_ALIASES.get(name, name)
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"unknown dataset {name!r}: not 'digits', not "
                     "'imagefolder:PATH' and not a tfds dataset name") from None
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_error(name, str(data_dir or "the default tfds data_dir"),
                      f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                      ) from None
  where = str(builder.data_dir)
  image_key, label_key = _image_label_keys(builder, name)
  split_names = list(builder.info.splits) if builder.info.splits else []
  # Without metadata (e.g. under tfds.testing.mock_data) split names are
  # unknown: try the usual two.
  train_split = "train"
  test_split = "test" if (not split_names or "test" in split_names) else None
  if split_names and "train" not in split_names:
    raise ValueError(f"tfds dataset {name!r} has no 'train' split "
                     f"(splits: {split_names})")
  arrays = {}
  for split in [s for s in (train_split, test_split) if s]:
    try:
      source = tfds.data_source(tfds_name, split=split, data_dir=data_dir,
                                download=not builder.is_prepared())
    except (ImportError, NotImplementedError, OSError, RuntimeError,
            AssertionError, ValueError) as e:
      if split == "test" and not split_names and arrays:
        break  # No test split: carve one out of train.
      if isinstance(e, NotImplementedError) and builder.is_prepared():
        raise ValueError(
            f"dataset {name!r} in {where} was prepared as "
            f"{builder.info.file_format}, which tfds.data_source cannot read "
            f"without TensorFlow; prepare it again with `tfds.builder({name!r}"
            f", data_dir=...).download_and_prepare(file_format='array_record')`"
            ) from None
      raise _tfds_error(name, where, f"{type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120]}") from None
    arrays[split] = _materialise(source, image_key, label_key)
  label_feature = builder.info.features[label_key]
  class_names = tuple(getattr(label_feature, "names", None) or ())
  if len(class_names) < getattr(label_feature, "num_classes", 0):
    class_names = tuple(str(i) for i in range(label_feature.num_classes))
  x, y = arrays["train"]
  x_test, y_test = arrays.get("test", (None, None))
  return x, y, x_test, y_test, class_names


def _image_label_keys(builder, name):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  keys = builder.info.supervised_keys
  features = builder.info.features
  if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    image_key, label_key = keys
  else:
    image_key = next((k for k, f in features.items()
                      if isinstance(f, tfds.features.Image)), None)
    label_key = next((k for k, f in features.items()
                      if isinstance(f, tfds.features.ClassLabel)), None)
  if (image_key is None or label_key is None or
      not isinstance(features[image_key], tfds.features.Image) or
      not isinstance(features[label_key], tfds.features.ClassLabel)):
    raise ValueError(f"tfds dataset {name!r} is not an image classification "
                     "dataset (no Image and ClassLabel features)")
  return image_key, label_key


def _materialise(source, image_key, label_key, chunk=1024):
  """Reads a random-access data source into ``(uint8 images, int32 labels)``."""
  n = len(source)
  images, labels = [], []
  batched = hasattr(source, "__getitems__")
  for start in range(0, n, chunk):
    idx = list(range(start, min(n, start + chunk)))
    records = None
    if batched:
      try:
        records = source.__getitems__(idx)
      except TypeError:
        # tfds.testing.mock_data's mock data source only implements
        # __getitem__; fall back to one record at a time.
        batched = False
    if records is None:
      records = [source[i] for i in idx]
    images += [np.asarray(r[image_key], np.uint8) for r in records]
    labels += [int(r[label_key]) for r in records]
  if not images:
    raise ValueError("tfds split is empty")
  x = np.stack(images)
  return (x[..., None] if x.ndim == 3 else x), np.asarray(labels, np.int32)


# --------------------------------------------------------------------------
# Augmentation and batching
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Augment:
  """Training-time augmentation (applied in numpy on the host).

  Attributes:
    pad: zero-padding before a random crop back to ``H x W`` (0: off). 4 for
      32x32 as in ResNet/ENAS/NAO/DARTS; 1 for 8x8 digits.
    flip: random horizontal flip.
    cutout: side of the square zeroed after normalisation (DeVries & Taylor;
      16 for 32x32 in DARTS/NAO final training); 0: off.
    rotate: largest random rotation in degrees (0: off), and
    scale: largest relative random zoom (0: off): a random affine map about
      the image centre, bilinear, zeros outside (the classic distortions for
      handwritten digits, Simard et al. 2003); applied before pad-crop.
  """
  pad: int = 0
  flip: bool = False
  cutout: int = 0
  rotate: float = 0.0
  scale: float = 0.0


def default_augment(ds: ImageDataset, *, cutout: int | None = 0, rotate: float = 0.0,
                    scale: float = 0.0) -> Augment:
  """The usual augmentation for ``ds``'s image size.

  Pad 4 for 32x32 (scaled down: ``H // 8``, at least 1), flip unless the
  dataset forbids it (digits), cutout ``cutout`` (``None``: ``H // 2``, i.e.
  16 for 32x32 and 4 for 8x8), and the random affine map of ``rotate`` /
  ``scale`` (off by default).
  """
  h = ds.image_shape[0]
  return Augment(pad=max(1, h // 8), flip=ds.flip,
                 cutout=h // 2 if cutout is None else int(cutout),
                 rotate=float(rotate), scale=float(scale))


def num_batches(ds: ImageDataset, split: str, batch_size: int, *,
                drop_remainder: bool = True) -> int:
  """Batches per epoch that ``epoch_batches`` yields."""
  n = ds.size(split)
  return n // batch_size if drop_remainder else -(-n // batch_size)


def _affine(x: np.ndarray, rotate: float, scale: float, rng: np.random.Generator) -> np.ndarray:
  """Random rotation (up to ``rotate`` degrees) and zoom (``1 +- scale``), bilinear, NHWC.

  Example:
    >>> x = np.zeros((1, 5, 5, 1), np.float32); x[0, 2, 2] = 1.0
    >>> y = _affine(x, 45.0, 0.0, np.random.default_rng(0))  # the centre is fixed
    >>> float(y[0, 2, 2, 0])
    1.0
  """
  b, h, w, _ = x.shape
  theta = np.deg2rad(rng.uniform(-rotate, rotate, size=b))
  zoom = rng.uniform(1.0 - scale, 1.0 + scale, size=b)
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  ys, xs = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
  cos, sin = (np.cos(theta) / zoom)[:, None, None], (np.sin(theta) / zoom)[:, None, None]
  # source coordinates of every output pixel (the inverse map)
  sy = cos * ys[None] - sin * xs[None] + cy
  sx = sin * ys[None] + cos * xs[None] + cx
  y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
  fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  n = np.arange(b)[:, None, None]

  def at(yy, xx):  # zeros outside the image
    return padded[n, np.clip(yy + 1, 0, h + 1), np.clip(xx + 1, 0, w + 1)]

  out = ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
         + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1))
  return out.astype(x.dtype)


def _augment(x: np.ndarray, aug: Augment, rng: np.random.Generator):
  """Affine distortion, pad-crop and flip on [0, 1] float images (NHWC)."""
  b, h, w, _ = x.shape
  if aug.rotate > 0 or aug.scale > 0:
    x = _affine(x, aug.rotate, aug.scale, rng)
  if aug.pad > 0:
    p = aug.pad
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    oy = rng.integers(0, 2 * p + 1, size=b)
    ox = rng.integers(0, 2 * p + 1, size=b)
    rows = oy[:, None] + np.arange(h)[None]
    cols = ox[:, None] + np.arange(w)[None]
    x = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
  if aug.flip:
    flip = rng.random(b) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
  return x


def _cutout(x: np.ndarray, length: int, rng: np.random.Generator):
  b, h, w, _ = x.shape
  cy = rng.integers(0, h, size=b)
  cx = rng.integers(0, w, size=b)
  ys, xs = np.arange(h)[None, :], np.arange(w)[None, :]
  half = length // 2
  in_y = (ys >= (cy - half)[:, None]) & (ys < (cy - half + length)[:, None])
  in_x = (xs >= (cx - half)[:, None]) & (xs < (cx - half + length)[:, None])
  mask = in_y[:, :, None] & in_x[:, None, :]
  return np.where(mask[..., None], 0.0, x).astype(np.float32)


def epoch_batches(ds: ImageDataset, split: str, batch_size: int, *,
                  seed: int, epoch: int, start_step: int = 0,
                  augment: Augment | None = None, shuffle: bool = True,
                  drop_remainder: bool = True) -> Iterator[dict[str, np.ndarray]]:
  """The batches of one epoch, a pure function of ``(seed, epoch, step)``.

  Args:
    ds: the dataset.
    split: ``"train"``, ``"valid"``, ``"test"`` or a join like
      ``"train+valid"`` (final training on all training images).
    batch_size: examples per batch.
    seed: data seed (the permutation and augmentation depend on it).
    epoch: epoch index; each epoch has its own permutation.
    start_step: first batch to yield (resume mid-epoch); earlier batches are
      skipped without being computed.
    augment: ``Augment`` or None (evaluation).
    shuffle: permute the examples (False for evaluation).
    drop_remainder: drop the last partial batch (training). When False the
      last batch is padded to ``batch_size`` and its ``mask`` marks the real
      examples, so that a jitted eval step compiles once.

  Yields:
    dicts with ``image`` float32[B, H, W, C] (normalised), ``label`` int32[B]
    and ``mask`` float32[B] (1 for real examples).

  Example:
    >>> ds = load_dataset("digits", train_size=64)
    >>> b = next(epoch_batches(ds, "train", 32, seed=0, epoch=3, start_step=1))
    >>> {k: v.shape for k, v in b.items()}
    {'image': (32, 8, 8, 1), 'label': (32,), 'mask': (32,)}
    >>> all(np.array_equal(b["image"], b2["image"])  # the same batch as in a full pass
    ...     for b2 in list(epoch_batches(ds, "train", 32, seed=0, epoch=3))[1:2])
    True
    >>> [int(b["mask"].sum()) for b in epoch_batches(ds, "test", 200, seed=0, epoch=0,
    ...                                              shuffle=False, drop_remainder=False)]
    [200, 159]
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  x_all, y_all = ds.arrays(split)
  n = len(y_all)
  order = (np.random.default_rng([seed, epoch, 0]).permutation(n) if shuffle
           else np.arange(n))
  steps = n // batch_size if drop_remainder else -(-n // batch_size)
  mean = ds.mean.reshape(1, 1, 1, -1)
  std = ds.std.reshape(1, 1, 1, -1)
  for step in range(start_step, steps):
    idx = order[step * batch_size:(step + 1) * batch_size]
    x = x_all[idx].astype(np.float32) / 255.0
    y = y_all[idx].astype(np.int32)
    rng = np.random.default_rng([seed, epoch, 1, step])
    if augment is not None:
      x = _augment(x, augment, rng)
    x = ((x - mean) / std).astype(np.float32)
    if augment is not None and augment.cutout > 0:
      x = _cutout(x, augment.cutout, rng)
    mask = np.ones(len(idx), np.float32)
    if len(idx) < batch_size:
      pad = batch_size - len(idx)
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.float32)])
      y = np.concatenate([y, np.zeros(pad, np.int32)])
      mask = np.concatenate([mask, np.zeros(pad, np.float32)])
    yield {"image": np.ascontiguousarray(x), "label": y, "mask": mask}


# --------------------------------------------------------------------------
# Prefetch
# --------------------------------------------------------------------------

_END = object()


class prefetch:  # pylint: disable=invalid-name
  """Iterates ``batches`` from a background thread, ``device_put`` ahead.

  The thread prepares up to ``size`` batches (numpy augmentation and the
  host-to-device copy) while the device runs the current step. Exceptions in
  the producer are re-raised in the consumer. Use as an iterator; ``close()``
  (or leaving a ``with`` block) stops the thread early.

  Args:
    batches: an iterable of pytrees of numpy arrays.
    size: how many batches to keep ready.
    device_put: copy each batch to the default device (``jax.device_put``).

  Example:
    >>> ds = load_dataset("digits", train_size=64)
    >>> total = 0
    >>> with prefetch(epoch_batches(ds, "train", 16, seed=0, epoch=0)) as it:
    ...   for batch in it:
    ...     total += int(batch["label"].shape[0])  # e.g. state = train_step(state, batch)
    >>> total, type(batch["image"]).__name__  # copied to the device by the thread
    (64, 'ArrayImpl')
  """

  def __init__(self, batches: Iterable[Any], size: int = 2,
               device_put: bool = True):
    if size < 1:
      raise ValueError(f"prefetch size must be >= 1, got {size}")
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._produce,
                                    args=(iter(batches), device_put),
                                    daemon=True)
    self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _produce(self, it, device_put):
    try:
      if device_put:
        import jax  # pylint: disable=g-import-not-at-top
      for batch in it:
        if self._stop.is_set():
          return
        if device_put:
          batch = jax.device_put(batch)
        if not self._put(batch):
          return
      self._put(_END)
    except BaseException as e:  # pylint: disable=broad-except
      self._put(e)

  def __iter__(self):
    return self

  def __next__(self):
    if self._stop.is_set():
      raise StopIteration
    item = self._queue.get()
    if item is _END:
      self._stop.set()
      raise StopIteration
    if isinstance(item, BaseException):
      self._stop.set()
      raise item
    return item

  def close(self):
    """Stops the producer thread and waits for it."""
    self._stop.set()
    self._thread.join(timeout=5.0)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
