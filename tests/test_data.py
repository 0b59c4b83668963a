"""Tests of nas_jax.data: digits, tfds (mocked), image folders, batching, PTB."""
import importlib.util
import pathlib
import sys

import jax
import numpy as np
import pytest

from nas_jax import data
from nas_jax.data import images as images_lib


@pytest.fixture(scope="module")
def digits():
  return data.load_dataset("digits", seed=0)


# --- digits and splits --------------------------------------------------------

def test_digits_shapes_and_disjoint_splits(digits):
  assert digits.image_shape == (8, 8, 1)
  assert digits.num_classes == 10
  assert not digits.flip
  sizes = {s: digits.size(s) for s in ("train", "valid", "test")}
  assert sum(sizes.values()) == 1797
  assert sizes["test"] == round(1797 * 0.2)
  assert sizes["valid"] == round((1797 - sizes["test"]) * 0.1)
  for s in ("train", "valid", "test"):
    assert digits.images[s].dtype == np.uint8
    assert digits.labels[s].dtype == np.int32
  # Disjoint: no image row appears in two splits (digits has a few exact
  # duplicates, so compare (image, label) multisets against the source).
  from sklearn.datasets import load_digits
  src = np.round(load_digits().images * 255 / 16).astype(np.uint8)
  all_rows = np.concatenate([digits.images[s] for s in ("train", "valid", "test")])
  assert sorted(map(bytes, all_rows.reshape(1797, -1))) == sorted(
      map(bytes, src.reshape(1797, -1)))
  np.testing.assert_allclose(
      digits.mean, digits.images["train"].mean() / 255.0, rtol=1e-5)


def test_split_is_deterministic_and_seeded():
  a = data.load_dataset("digits", seed=3)
  b = data.load_dataset("digits", seed=3)
  c = data.load_dataset("digits", seed=4)
  np.testing.assert_array_equal(a.labels["valid"], b.labels["valid"])
  np.testing.assert_array_equal(a.images["test"], b.images["test"])
  assert not np.array_equal(a.images["valid"], c.images["valid"])


def test_sizes_configurable():
  ds = data.load_dataset("digits", valid_size=100, train_size=300, test_size=50)
  assert (ds.size("train"), ds.size("valid"), ds.size("test")) == (300, 100, 50)
  assert ds.size("train+valid") == 400
  x, y = ds.arrays("train+valid")
  assert x.shape == (400, 8, 8, 1) and y.shape == (400,)
  ds0 = data.load_dataset("digits", valid_fraction=0.0)
  assert ds0.size("valid") == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"valid_fraction": 1.0}, "valid_fraction"),
    ({"valid_fraction": -0.1}, "valid_fraction"),
    ({"test_fraction": 0.0}, "test_fraction"),
    ({"train_size": -1}, "train_size"),
    ({"valid_size": 100000}, "cannot hold out"),
])
def test_bad_split_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.load_dataset("digits", **kwargs)


def test_unknown_split_name(digits):
  with pytest.raises(ValueError, match="unknown split 'val'"):
    digits.arrays("val")


# --- batching -----------------------------------------------------------------

def _batches(ds, **kw):
  kw.setdefault("seed", 0)
  kw.setdefault("epoch", 0)
  return list(data.epoch_batches(ds, "train", 32, **kw))


def test_batches_deterministic_and_resumable(digits):
  aug = data.Augment(pad=1, flip=True, cutout=4)
  a = _batches(digits, augment=aug, epoch=2)
  b = _batches(digits, augment=aug, epoch=2)
  assert len(a) == data.num_batches(digits, "train", 32) == digits.size("train") // 32
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  # Resuming at step 5 yields exactly the tail.
  tail = _batches(digits, augment=aug, epoch=2, start_step=5)
  assert len(tail) == len(a) - 5
  for x, y in zip(a[5:], tail):
    np.testing.assert_array_equal(x["image"], y["image"])
  # Another epoch or seed: another order.
  c = _batches(digits, augment=aug, epoch=3)
  d = _batches(digits, augment=aug, epoch=2, seed=1)
  assert not np.array_equal(a[0]["label"], c[0]["label"])
  assert not np.array_equal(a[0]["label"], d[0]["label"])


def test_eval_batches_cover_every_example_once(digits):
  n = digits.size("valid")
  bs = 50
  batches = list(data.epoch_batches(digits, "valid", bs, seed=0, epoch=0,
                                    shuffle=False, drop_remainder=False))
  assert len(batches) == -(-n // bs)
  assert all(b["image"].shape == (bs, 8, 8, 1) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == n and np.all(mask[n:] == 0)
  labels = np.concatenate([b["label"] for b in batches])[:n]
  np.testing.assert_array_equal(labels, digits.labels["valid"])


def test_normalisation(digits):
  x = np.concatenate([b["image"] for b in data.epoch_batches(
      digits, "train", 64, seed=0, epoch=0, shuffle=False,
      drop_remainder=False)])[:digits.size("train")]
  assert abs(x.mean()) < 1e-3
  assert abs(x.std() - 1.0) < 1e-3


def _raw(ds, batch):
  return batch["image"] * ds.std + ds.mean  # back to [0, 1]


def test_pad_crop_is_a_shift(digits):
  b = _batches(digits, augment=data.Augment(pad=1), shuffle=False)[0]
  orig = digits.images["train"][:32].astype(np.float32) / 255.0
  got = _raw(digits, b)
  for i in range(32):
    padded = np.pad(orig[i], ((1, 1), (1, 1), (0, 0)))
    shifts = [(dy, dx) for dy in range(3) for dx in range(3)
              if np.allclose(padded[dy:dy + 8, dx:dx + 8], got[i], atol=1e-5)]
    assert shifts, f"image {i} is not a shifted crop"
  # Not all crops are the identity shift.
  plain = _batches(digits, shuffle=False)[0]
  assert not np.allclose(plain["image"], b["image"])


def test_flip_and_cutout():
  ds = data.load_dataset("digits")
  orig = ds.images["train"][:32].astype(np.float32) / 255.0
  got = _raw(ds, _batches(ds, augment=data.Augment(flip=True), shuffle=False)[0])
  same = [np.allclose(got[i], orig[i], atol=1e-5) for i in range(32)]
  mirrored = [np.allclose(got[i], orig[i, :, ::-1], atol=1e-5) for i in range(32)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert any(m and not s for s, m in zip(same, mirrored))
  assert any(s and not m for s, m in zip(same, mirrored))
  cut = _batches(ds, augment=data.Augment(cutout=4), shuffle=False)[0]["image"]
  plain = _batches(ds, shuffle=False)[0]["image"]
  changed = cut != plain
  assert np.all(cut[changed] == 0.0)
  per_image = changed.reshape(32, -1).sum(1)
  assert per_image.max() <= 16 and per_image.sum() > 0


def test_default_augment_scales_with_image_size(digits):
  aug = data.default_augment(digits, cutout=None)
  assert aug == data.Augment(pad=1, flip=False, cutout=4)
  big = images_lib.ImageDataset("x", 10, (32, 32, 3), np.zeros(3), np.ones(3),
                                {}, {}, flip=True)
  assert data.default_augment(big, cutout=None) == data.Augment(4, True, 16)


# --- prefetch -----------------------------------------------------------------

def test_prefetch_same_batches_on_device(digits):
  ref = _batches(digits)
  with data.prefetch(data.epoch_batches(digits, "train", 32, seed=0, epoch=0),
                     size=2) as it:
    got = list(it)
  assert len(got) == len(ref)
  assert isinstance(got[0]["image"], jax.Array)
  for a, b in zip(ref, got):
    np.testing.assert_array_equal(a["image"], np.asarray(b["image"]))


def test_prefetch_reraises_and_closes():
  def broken():
    yield {"x": np.zeros(2)}
    raise KeyError("boom")
  it = data.prefetch(broken(), device_put=False)
  next(it)
  with pytest.raises(KeyError, match="boom"):
    next(it)
  endless = data.prefetch(({"x": np.zeros(1)} for _ in iter(int, 1)), size=1)
  next(endless)
  endless.close()
  assert not endless._thread.is_alive()  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="prefetch size"):
    data.prefetch([], size=0)


# --- tfds ---------------------------------------------------------------------

def test_tfds_data_source_mocked(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    ds = data.load_dataset("cifar10", data_dir=tmp_path, valid_size=2)
  assert ds.image_shape == (32, 32, 3)
  assert ds.num_classes == 10
  assert len(ds.class_names) == 10
  assert (ds.size("train"), ds.size("valid"), ds.size("test")) == (10, 2, 12)
  assert ds.images["train"].dtype == np.uint8
  assert ds.labels["train"].max() < 10
  assert ds.flip
  assert "tensorflow" not in sys.modules  # data_source needs no TensorFlow
  with tfds.testing.mock_data(num_examples=5):
    gray = data.load_dataset("mnist", data_dir=tmp_path, valid_size=1)
  assert gray.image_shape == (28, 28, 1)


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="with TensorFlow installed tfds would download")
def test_tfds_unprepared_gives_one_line_error(tmp_path):
  with pytest.raises(ValueError) as info:
    data.load_dataset("cifar10", data_dir=tmp_path)
  msg = str(info.value)
  assert "\n" not in msg
  assert "'cifar10'" in msg and str(tmp_path) in msg
  assert "--dataset digits" in msg and "nas_jax[prepare]" in msg


def test_unknown_dataset():
  with pytest.raises(ValueError, match="unknown dataset 'no_such_data'"):
    data.load_dataset("no_such_data")
  with pytest.raises(ValueError, match="non-empty string"):
    data.load_dataset("")


# --- image folders ------------------------------------------------------------

def _write_folder(root: pathlib.Path, classes, per_class, size=(6, 5),
                  mode="RGB", ext=".png"):
  from PIL import Image
  for c, cls in enumerate(classes):
    (root / cls).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
      value = 40 * c + i  # the class is readable from the pixels
      arr = np.full((size[0], size[1], 3) if mode == "RGB" else size, value,
                    np.uint8)
      Image.fromarray(arr).save(root / cls / f"{i:03d}{ext}")


def test_imagefolder_with_test_subfolder(tmp_path):
  _write_folder(tmp_path / "train", ["ant", "bee", "cat"], 6)
  _write_folder(tmp_path / "test", ["ant", "bee", "cat"], 2)
  ds = data.load_dataset(f"imagefolder:{tmp_path}", valid_size=3)
  assert ds.class_names == ("ant", "bee", "cat")
  assert ds.image_shape == (6, 5, 3)
  assert (ds.size("train"), ds.size("valid"), ds.size("test")) == (15, 3, 6)
  # Subsets are drawn at random, not the first (class-sorted) files.
  sub = data.load_dataset(f"imagefolder:{tmp_path}", valid_size=3,
                          train_size=6, test_size=3)
  assert len(set(sub.labels["train"].tolist())) > 1
  assert len(set(sub.labels["test"].tolist())) > 1
  for s in ("train", "valid", "test"):
    np.testing.assert_array_equal(ds.images[s][:, 0, 0, 0] // 40, ds.labels[s])


def test_imagefolder_flat_grey_carves_test(tmp_path):
  _write_folder(tmp_path, ["a", "b"], 10, mode="L", ext=".jpg")
  ds = data.load_dataset(f"imagefolder:{tmp_path}", valid_size=2,
                         test_fraction=0.25)
  assert ds.image_shape == (6, 5, 1)
  assert (ds.size("train"), ds.size("valid"), ds.size("test")) == (13, 2, 5)


def test_imagefolder_errors(tmp_path):
  with pytest.raises(ValueError, match="is not a directory"):
    data.load_dataset(f"imagefolder:{tmp_path / 'nope'}")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no class subfolders"):
    data.load_dataset(f"imagefolder:{tmp_path / 'empty'}")
  mixed = tmp_path / "mixed"
  _write_folder(mixed, ["a"], 2, size=(6, 5))
  _write_folder(mixed, ["b"], 2, size=(7, 5))
  with pytest.raises(ValueError, match="image_size"):
    data.load_dataset(f"imagefolder:{mixed}", valid_size=0)
  ds = data.load_dataset(f"imagefolder:{mixed}", valid_size=0, image_size=(4, 4),
                         test_fraction=0.5)
  assert ds.image_shape == (4, 4, 3)
  extra = tmp_path / "extra"
  _write_folder(extra / "train", ["a", "b"], 2)
  _write_folder(extra / "test", ["z"], 1)
  with pytest.raises(ValueError, match="'z'"):
    data.load_dataset(f"imagefolder:{extra}")
  one = tmp_path / "one"
  _write_folder(one, ["only"], 3)
  with pytest.raises(ValueError, match=r"has one class \('only'\); a classifier needs at least 2"):
    data.load_dataset(f"imagefolder:{one}")
  (one / "hollow").mkdir()
  with pytest.raises(ValueError, match=r"class folder\(s\) \['hollow'\] .* hold no"):
    data.load_dataset(f"imagefolder:{one}")
  broken = tmp_path / "broken"
  _write_folder(broken, ["a", "b"], 2)
  victim = sorted((broken / "a").iterdir())[0]
  victim.write_bytes(victim.read_bytes()[:40])  # a truncated image file
  with pytest.raises(ValueError, match=f"cannot read {victim}"):
    data.load_dataset(f"imagefolder:{broken}")


# --- Penn Treebank --------------------------------------------------------------

def _write_ptb(root: pathlib.Path, valid="a b\n", test="c <unk>\n"):
  root.mkdir(exist_ok=True)
  (root / "ptb.train.txt").write_text(" a b a <unk>\n c a\n")
  (root / "ptb.valid.txt").write_text(valid)
  (root / "ptb.test.txt").write_text(test)


def test_load_ptb_tiny(tmp_path):
  _write_ptb(tmp_path, valid="a b zebra\n")
  corpus = data.load_ptb(tmp_path)
  # Frequency order: a (3), <eos> (2), then <unk>, b, c (1 each, alphabetical).
  assert corpus.vocab == ["a", "<eos>", "<unk>", "b", "c"]
  assert corpus.vocab_size == 5
  words = [corpus.vocab[i] for i in corpus.train]
  assert words == ["a", "b", "a", "<unk>", "<eos>", "c", "a", "<eos>"]
  assert [corpus.vocab[i] for i in corpus.valid] == ["a", "b", "<unk>", "<eos>"]
  assert corpus.train.dtype == np.int32


def test_load_ptb_errors(tmp_path):
  with pytest.raises(ValueError, match="ptb.train.txt"):
    data.load_ptb(tmp_path)
  root = tmp_path / "nounk"
  root.mkdir()
  (root / "ptb.train.txt").write_text("a b\n")
  (root / "ptb.valid.txt").write_text("a q\n")
  (root / "ptb.test.txt").write_text("a\n")
  with pytest.raises(ValueError, match="'q' of ptb.valid.txt"):
    data.load_ptb(root)


def test_batchify_and_bptt():
  ids = np.arange(103)
  d = data.batchify(ids, 4)
  assert d.shape == (4, 25) and d.dtype == np.int32
  np.testing.assert_array_equal(d[1], np.arange(25, 50))
  windows = list(data.bptt_batches(d, 7))
  assert len(windows) == data.num_bptt_batches(d, 7) == 4  # 24 targets: 7+7+7+3
  assert [x.shape[1] for x, _ in windows] == [7, 7, 7, 3]
  for x, y in windows:
    np.testing.assert_array_equal(y, x + 1)
  np.testing.assert_array_equal(np.concatenate([x for x, _ in windows], 1), d[:, :-1])
  assert len(list(data.bptt_batches(d, 7, drop_remainder=True))) == 3
  resumed = list(data.bptt_batches(d, 7, start_step=2))
  np.testing.assert_array_equal(resumed[0][0], windows[2][0])
  with pytest.raises(ValueError, match="too short"):
    data.batchify(np.arange(3), 4)
  with pytest.raises(ValueError, match="batchify first"):
    next(data.bptt_batches(ids, 7))


PTB_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


@pytest.mark.skipif(not (PTB_DIR / "ptb.train.txt").exists(),
                    reason=f"real Penn Treebank not found at {PTB_DIR}")
def test_real_ptb():
  corpus = data.load_ptb(PTB_DIR)
  assert corpus.vocab_size == 10000
  assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (929589, 73760, 82430)


def test_materialise_batched_and_single_record_sources():
  """The batched ``__getitems__`` path of real array_record sources (the
  mocked tfds source only has ``__getitem__``)."""
  rng = np.random.default_rng(0)
  records = [{"image": rng.integers(0, 255, (4, 4), dtype=np.uint8),
              "label": np.int64(i % 3)} for i in range(2500)]

  class Single:
    def __len__(self):
      return len(records)

    def __getitem__(self, i):
      return records[i]

  class Batched(Single):
    calls = 0

    def __getitems__(self, idx):
      Batched.calls += 1
      return [records[i] for i in idx]

  x1, y1 = images_lib._materialise(Single(), "image", "label")  # pylint: disable=protected-access
  x2, y2 = images_lib._materialise(Batched(), "image", "label")  # pylint: disable=protected-access
  assert Batched.calls == 3  # chunks of 1024
  assert x1.shape == (2500, 4, 4, 1) and y1.dtype == np.int32
  np.testing.assert_array_equal(x1, x2)
  np.testing.assert_array_equal(y1, y2)
  np.testing.assert_array_equal(y1[:4], [0, 1, 2, 0])


class _EdgeRng:
  """An rng double whose uniform draws are the upper bound (a fixed distortion)."""

  def uniform(self, lo, hi, size):
    return np.full(size, hi, np.float64)


def test_affine_rotation_and_zoom_are_exact_on_a_grid():
  from nas_jax.data import images as images_lib
  x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5, 1)
  # +90 degrees, no zoom: a quarter turn of the grid (every source pixel is a grid point)
  y = images_lib._affine(x, 90.0, 0.0, _EdgeRng())
  assert np.allclose(y, np.rot90(x, k=1, axes=(2, 1)), atol=1e-5) or \
      np.allclose(y, np.rot90(x, k=1, axes=(1, 2)), atol=1e-5)
  # zoom 2 (scale 1.0 is out of range for the config, fine here): the centre pixel
  # spreads over the centre 3x3 under bilinear sampling of half-pixel steps
  z = np.zeros((1, 5, 5, 1), np.float32)
  z[0, 2, 2] = 1.0
  out = images_lib._affine(z, 0.0, 1.0, _EdgeRng())[0, :, :, 0]
  assert out[2, 2] == 1.0 and out[1, 2] == pytest.approx(0.5) and out[1, 1] == pytest.approx(0.25)
  assert out[0].sum() == 0 and out[:, 0].sum() == 0


def test_affine_settings_are_checked_and_reach_the_augmentation():
  from nas_jax.tasks.images import ImageClassification, resolve_config
  with pytest.raises(ValueError, match=r"rotate=200.0: must be degrees in \[0, 180\]"):
    resolve_config({"rotate": 200.0})
  with pytest.raises(ValueError, match=r"scale=1.5: must be in \[0, 1\)"):
    resolve_config({"scale": 1.5})
  ds = data.load_dataset("digits", train_size=64)
  aug = ImageClassification()._augment(ds, resolve_config({"rotate": 10.0, "scale": 0.1}))
  assert (aug.rotate, aug.scale, aug.pad, aug.flip) == (10.0, 0.1, 1, False)
  plain = ImageClassification()._augment(ds, resolve_config({}))
  assert (plain.rotate, plain.scale) == (0.0, 0.0)
