"""Tests of lmcjax.importers: published sets round-trip into the npz the pipeline loads.

The torch files are written here without torch, as torch 2.13.0 writes them (a zip
of data.pkl, protocol-2 opcodes with the same globals, and raw storages); a test
also round-trips a real torch.save file when torch is installed.
"""
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from flax import serialization

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lmcjax import importers  # pylint: disable=g-import-not-at-top
from lmcjax import pipeline
from lmcjax import synthetic
from lmcjax import validate
from lmcjax.configs.parts import distill as distill_part
from lmcjax.configs.parts import model as model_part
from lmcjax.importers import common
from lmcjax.importers import torchfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10, CIFAR100, DIGITS = (common.dataset_spec(n) for n in ("cifar10", "cifar100", "digits"))
# The sources' own statistics, as their code has them: MTT utils.py get_dataset (and
# DATM utils_baseline.py) standardise CIFAR-100 with CIFAR-10's; FRePo dataloader.py.
MTT_CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
FREPO_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage",
             np.dtype(np.float16): "HalfStorage", np.dtype(np.bool_): "BoolStorage"}


class Strided:
  """A torch tensor that views its storage: elements, offset, size, stride."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _ops(obj, storages) -> bytes:
  """Protocol-2 opcodes for obj, tensors as torch.save writes them."""
  if obj is None or isinstance(obj, bool):
    return {None: b"N", True: b"\x88", False: b"\x89"}[obj]
  if isinstance(obj, int):
    return b"J" + struct.pack("<i", obj)
  if isinstance(obj, float):
    return b"G" + struct.pack(">d", obj)
  if isinstance(obj, str):
    return b"X" + struct.pack("<I", len(obj.encode())) + obj.encode()
  if isinstance(obj, tuple):
    return b"(" + b"".join(_ops(v, storages) for v in obj) + b"t"
  if isinstance(obj, list):
    return b"](" + b"".join(_ops(v, storages) for v in obj) + b"e"
  if isinstance(obj, dict):
    return b"}(" + b"".join(_ops(k, storages) + _ops(v, storages) for k, v in obj.items()) + b"u"
  if isinstance(obj, np.ndarray):
    flat = np.ascontiguousarray(obj).reshape(-1)
    strides = tuple(int(np.prod(obj.shape[i + 1:])) for i in range(obj.ndim))
    obj = Strided(flat, 0, obj.shape, strides)
  key = str(len(storages))
  storages[key] = obj.storage
  glob = lambda module, name: f"c{module}\n{name}\n".encode()
  pid = (b"(" + _ops("storage", storages) + glob("torch", _STORAGES[obj.storage.dtype])
         + _ops(key, storages) + _ops("cpu", storages) + _ops(obj.storage.size, storages) + b"t")
  args = (b"(" + pid + b"Q" + _ops(obj.offset, storages) + _ops(tuple(obj.size), storages)
          + _ops(tuple(obj.stride), storages) + b"\x89" + glob("collections", "OrderedDict")
          + b")R" + b"t")
  return glob("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def write_pt(path, obj, pickled=None) -> str:
  """A torch.save zip archive of obj (or of the given data.pkl bytes)."""
  storages = {}
  data_pkl = pickled if pickled is not None else b"\x80\x02" + _ops(obj, storages) + b"."
  os.makedirs(os.path.dirname(str(path)), exist_ok=True)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", data_pkl)
    z.writestr("archive/byteorder", "little")
    for key, values in storages.items():
      z.writestr(f"archive/data/{key}", values.astype(values.dtype.newbyteorder("<")).tobytes())
    z.writestr("archive/version", "3\n")
  return str(path)


def pixels_nchw(spec, ipc, seed=0):
  h, w, c = spec.image_shape
  return np.random.RandomState(seed).rand(spec.num_classes * ipc, c, h, w).astype(np.float32)


def sorted_labels(spec, ipc):
  return np.repeat(np.arange(spec.num_classes), ipc).astype(np.int64)


def lmcjax_images(pixels_nchw_, spec):
  """What the importer must produce: NHWC, standardised with lmcjax's statistics."""
  return common.standardise(pixels_nchw_.transpose(0, 2, 3, 1), spec)


def run_import(fmt, spec, out, **inputs):
  meta = importers.import_set(fmt, importers.Inputs(**inputs), spec.name, str(out))
  images, labels, loaded = synthetic.load_checked(str(out), spec)  # distill.load_path's reader
  assert loaded == meta
  return images, labels, meta


# --- the restricted torch reader ---

def test_torch_reader_reads_tensors_views_and_containers(tmp_path):
  rs = np.random.RandomState(0)
  base = rs.rand(4 * 3 * 2).astype(np.float32)
  # torch.save of x.transpose(0, 2)[1:] keeps the whole storage and strides into it.
  view = Strided(base, 1, (1, 3, 4), (1, 2, 6))
  expected_view = base.reshape(4, 3, 2).transpose(2, 1, 0)[1:]
  obj = {"x": [rs.rand(2, 3).astype(np.float16), np.arange(5)], "lr": np.array(0.25, np.float32),
         "flags": np.array([True, False]), "view": view, "n": 3, "name": "syn"}
  got = torchfile.load(write_pt(tmp_path / "obj.pt", obj))
  np.testing.assert_array_equal(got["x"][0], obj["x"][0])
  assert got["x"][0].dtype == np.float16 and got["x"][1].dtype == np.int64
  np.testing.assert_array_equal(got["view"], expected_view)
  assert got["lr"].shape == () and got["lr"] == np.float32(0.25)
  assert got["flags"].tolist() == [True, False] and (got["n"], got["name"]) == (3, "syn")


def test_a_real_torch_file_reads_the_same():
  torch = pytest.importorskip("torch")
  import tempfile  # pylint: disable=g-import-not-at-top
  x = torch.rand(4, 3, 2, 2)
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "data.pt")
    torch.save([x.transpose(1, 3), torch.arange(4), torch.nn.Parameter(x[1:])], path)
    got = torchfile.load(path)
  np.testing.assert_array_equal(got[0], x.transpose(1, 3).numpy())
  np.testing.assert_array_equal(got[1], np.arange(4))
  np.testing.assert_array_equal(got[2], x[1:].numpy())


class _RunsCode:
  """Unpickling this calls `call(argument)`: os.system or eval, each creating a file."""

  def __init__(self, call, argument):
    self.call, self.argument = call, argument

  def __reduce__(self):
    return self.call, (self.argument,)


@pytest.mark.parametrize("call", [os.system, eval])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, call):
  marker = str(tmp_path / "ran")
  argument = f"touch {marker}" if call is os.system else f"open({marker!r}, 'w').close()"
  evil = pickle.dumps([_RunsCode(call, argument)], protocol=2)
  path = write_pt(tmp_path / "evil.pt", None, pickled=evil)
  with pytest.raises(validate.InputError, match="refusing to load global") as e:
    torchfile.load(path)
  assert not os.path.exists(marker) and "\n" not in str(e.value)
  raw = tmp_path / "legacy.pt"  # a bare pickle, as pre-1.6 torch wrote: never unpickled
  raw.write_bytes(evil)
  with pytest.raises(validate.InputError, match="legacy"):
    torchfile.load(str(raw))
  assert not os.path.exists(marker)


def test_a_truncated_torch_file_is_one_line(tmp_path):
  path = write_pt(tmp_path / "x.pt", [np.zeros((2, 3), np.float32)])
  with zipfile.ZipFile(path) as z:
    pkl = z.read("archive/data.pkl")
  cut_pickle = write_pt(tmp_path / "cut.pt", None, pickled=pkl[:len(pkl) // 2])
  raw = open(path, "rb").read()
  open(path, "wb").write(raw[:len(raw) // 2])  # a download cut short
  for bad, message in ((cut_pickle, "truncated or corrupt"), (path, "not a torch .pt file")):
    with pytest.raises(validate.InputError, match=message) as e:
      torchfile.load(bad)
    assert "\n" not in str(e.value)


# --- each format into the npz the pipeline loads ---

def test_idc_round_trips_and_decodes_as_idc_does(tmp_path):
  ipc, factor = 2, 2
  pixels = pixels_nchw(CIFAR10, ipc)
  path = write_pt(tmp_path / f"conv3in_grad_mse_factor{factor}_lr0.005_mix_ipc{ipc}" / "data.pt",
                  [pixels, sorted_labels(CIFAR10, ipc)])
  images, labels, meta = run_import("idc", CIFAR10, tmp_path / "idc.npz", images=path)
  np.testing.assert_allclose(images, lmcjax_images(pixels, CIFAR10), atol=1e-6)
  np.testing.assert_array_equal(labels, sorted_labels(CIFAR10, ipc))
  assert (meta["factor"], meta["ipc"], meta["method"]) == (factor, ipc, "idc")
  decoded, decoded_labels, _ = synthetic.load_decoded(str(tmp_path / "idc.npz"), CIFAR10)
  expected, expected_labels = idc_decode_zoom(pixels, sorted_labels(CIFAR10, ipc), factor)
  n, k = len(pixels), factor * factor
  # IDC concatenates crop-major (all images' crop 0, then crop 1, ...); lmcjax image-major.
  expected = lmcjax_images(expected, CIFAR10).reshape((k, n) + CIFAR10.image_shape)
  np.testing.assert_allclose(np.asarray(decoded).reshape((n, k) + CIFAR10.image_shape),
                             expected.swapaxes(0, 1), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(decoded_labels).reshape(n, k),
                                expected_labels.reshape(k, n).T)


def idc_decode_zoom(pixels, labels, factor):
  """IDC test.py decode_zoom (h divisible by factor): factor^2 crops, crop-major,
  each upsampled as nn.Upsample(mode='bilinear') does (align_corners=False)."""
  h = pixels.shape[-1]
  s = h // factor
  crops = np.concatenate([pixels[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s]
                          for i in range(factor) for j in range(factor)])
  src = np.maximum((np.arange(h) + 0.5) * s / h - 0.5, 0)
  lo = np.floor(src).astype(int)
  hi, frac = np.minimum(lo + 1, s - 1), (src - lo).astype(np.float32)
  rows = crops[:, :, lo] * (1 - frac)[:, None] + crops[:, :, hi] * frac[:, None]
  full = rows[..., lo] * (1 - frac) + rows[..., hi] * frac
  return full, np.concatenate([labels] * factor * factor)


@pytest.mark.parametrize("fmt, spec, soft", [("mtt", CIFAR10, False), ("datm", CIFAR100, True)])
def test_trajectory_matching_sets_are_restandardised_with_their_lr(tmp_path, fmt, spec, soft):
  ipc = 1
  pixels = pixels_nchw(spec, ipc)
  mean, std = (np.asarray(v, np.float32)[:, None, None] for v in MTT_CIFAR_STATS)
  stored = (pixels - mean) / std
  hard = sorted_labels(spec, ipc)
  logits = np.eye(spec.num_classes, dtype=np.float32)[hard] * 3 + 0.1
  inputs = dict(images=write_pt(tmp_path / "images_best.pt", stored),
                labels=write_pt(tmp_path / "labels_best.pt", logits if soft else hard))
  if soft:
    inputs["lr_file"] = write_pt(tmp_path / "lr_best.pt", np.array(0.0123, np.float32))
  else:
    inputs["lr"] = 0.0123
  images, labels, meta = run_import(fmt, spec, tmp_path / f"{fmt}.npz", **inputs)
  np.testing.assert_allclose(images, lmcjax_images(pixels, spec), atol=1e-5)
  np.testing.assert_array_equal(labels, hard)
  assert meta["lr"] == pytest.approx(0.0123) and meta["factor"] == 1
  if soft:
    assert meta["source"]["soft_label_argmax_agrees_with_position"] == 1.0


def test_soft_labels_become_classes_by_position_or_argmax():
  logits = np.eye(10, dtype=np.float32)[sorted_labels(CIFAR10, 2)]
  logits[0] = np.eye(10)[7]  # image 0 was distilled for class 0 but now scores class 7
  by_position, how = common.labels_of(logits, 20, CIFAR10, "", "labels_best.pt")
  np.testing.assert_array_equal(by_position, sorted_labels(CIFAR10, 2))
  assert how["soft_label_argmax_agrees_with_position"] == pytest.approx(19 / 20)
  by_argmax, _ = common.labels_of(logits, 20, CIFAR10, "argmax", "labels_best.pt")
  assert by_argmax[0] == 7 and (by_argmax[1:] == by_position[1:]).all()
  with pytest.raises(validate.InputError, match="pass --soft_labels=argmax"):
    common.labels_of(logits[:19], 19, CIFAR10, "position", "labels_best.pt")


def _zca(dim, seed=0):
  """An invertible whitening (a permutation with scales) and its inverse."""
  rs = np.random.RandomState(seed)
  perm, scale = rs.permutation(dim), rs.uniform(0.5, 2.0, dim)
  whiten = np.zeros((dim, dim), np.float32)
  whiten[perm, np.arange(dim)] = scale
  rev = np.zeros((dim, dim), np.float32)
  rev[np.arange(dim), perm] = 1 / scale
  return whiten, rev, rs.randn(dim).astype(np.float32) * 0.1


@pytest.mark.parametrize("fmt, key", [("frepo", "params"), ("rcig", "ema_average")])
def test_frepo_and_rcig_checkpoints_are_unwhitened_from_their_state_key(tmp_path, fmt, key):
  ipc = 2
  pixels = pixels_nchw(CIFAR10, ipc).transpose(0, 2, 3, 1)
  mean, std = FREPO_CIFAR10_STATS
  whiten, rev, zca_mean = _zca(int(np.prod(CIFAR10.image_shape)))
  flat = ((pixels - np.float32(mean)) / np.float32(std)).reshape(len(pixels), -1)
  x_proto = ((flat - zca_mean) @ whiten).reshape(pixels.shape)  # FRePo ops.py preprocess_op
  y_proto = np.eye(10, dtype=np.float32)[sorted_labels(CIFAR10, ipc)] - 0.1
  decoy = {"x_proto": np.zeros_like(x_proto), "y_proto": y_proto}  # the other state key
  state = {"step": 500, "params": decoy, "ema_average": decoy, key: {"x_proto": x_proto,
                                                                        "y_proto": y_proto}}
  os.makedirs(tmp_path / "ckpt")
  (tmp_path / "ckpt" / "checkpoint_500").write_bytes(serialization.msgpack_serialize(state))
  zca = tmp_path / "cifar10_normalize_zca.npz"
  np.savez(zca, whitening_transform=whiten, rev_whitening_transform=rev, zca_mean=zca_mean)
  images, labels, meta = run_import(fmt, CIFAR10, tmp_path / f"{fmt}.npz",
                                    checkpoint=str(tmp_path / "ckpt"), zca=str(zca))
  np.testing.assert_allclose(images, common.standardise(pixels, CIFAR10), atol=1e-4)
  np.testing.assert_array_equal(labels, sorted_labels(CIFAR10, ipc))
  assert meta["source"]["state_key"] == key and "lr" not in meta


def test_an_imported_set_runs_the_distill_stage_with_its_learned_lr(tmp_path):
  from lmcjax.configs import default  # pylint: disable=g-import-not-at-top
  pixels = pixels_nchw(DIGITS, 2)
  inputs = dict(images=write_pt(tmp_path / "images_best.pt", pixels), image_space="pixel",
                labels=write_pt(tmp_path / "labels_best.pt", sorted_labels(DIGITS, 2)), lr=0.02)
  run_import("mtt", DIGITS, tmp_path / "mtt.npz", **inputs)
  c = default.get_config()
  c.data.name, c.stages = "digits", ("distill",)
  c.distill = distill_part.get_section()
  c.distill.load_path = str(tmp_path / "mtt.npz")
  c.distill.model = model_part.get("mlp", hidden=(16,))
  c.distill.eval.num_seeds, c.distill.eval.spec.epochs = 1, 2
  c.distill.eval.baseline = False
  out = pipeline.run(c, str(tmp_path / "run"))["distill"]
  assert out["method"] == "mtt" and out["distilled"]["lr"] == pytest.approx(0.02)


# --- bad input: one line each ---

@pytest.mark.parametrize("case, message", [
    ("unknown_format", "--format='kip' is not one of"),
    ("wrong_class_count", "labels name 100 classes, cifar10 has 10"),
    ("missing_class", "has 9 classes, cifar10 has 10"),
    ("wrong_shape", r"image shape \(28, 28, 1\) != cifar10's \(32, 32, 3\)"),
    ("unknown_layout", "unknown layout: IDC's data.pt holds"),
    ("soft_label_classes", "soft labels have 100 classes, cifar10 has 10"),
    ("unread_input", "--format=idc does not read --zca"),
    ("no_factor", "does not store its multi-formation factor"),
])
def test_bad_input_is_one_line(tmp_path, case, message):
  pixels, labels = pixels_nchw(CIFAR10, 1), sorted_labels(CIFAR10, 1)
  fmt, factor, extra = "idc", 1, {}
  if case == "wrong_class_count":
    labels = labels * 10 + 9
  elif case == "missing_class":
    labels = np.minimum(labels, 8)
  elif case == "wrong_shape":
    pixels = np.zeros((10, 1, 28, 28), np.float32)
  elif case == "soft_label_classes":
    labels = np.zeros((10, 100), np.float32)
  elif case == "unread_input":
    extra = {"zca": "z.npz"}
  elif case == "no_factor":
    factor = 0
  stored = {"data": pixels} if case == "unknown_layout" else [pixels, labels]
  path = write_pt(tmp_path / "set" / "data.pt", stored)
  inputs = importers.Inputs(images=path, factor=factor, **extra)
  fmt = "kip" if case == "unknown_format" else fmt
  with pytest.raises(validate.InputError, match=message) as e:
    importers.import_set(fmt, inputs, "cifar10", str(tmp_path / "out.npz"))
  assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "out.npz")


def test_command_line_writes_the_set_or_says_one_line(tmp_path):
  path = write_pt(tmp_path / "data.pt", [pixels_nchw(DIGITS, 1), sorted_labels(DIGITS, 1)])
  script = os.path.join(REPO, "launch", "import_distilled.py")
  run = lambda *args: subprocess.run([sys.executable, script, *args], capture_output=True,
                                     text=True, cwd=str(tmp_path), timeout=300)
  ok = run("--format=idc", "--dataset=digits", f"--images={path}", "--factor=2", "--out=s.npz")
  assert ok.returncode == 0, ok.stderr
  assert synthetic.load_checked(str(tmp_path / "s.npz"), DIGITS)[2]["factor"] == 2
  bad = run("--format=idc", "--dataset=cifar10", f"--images={path}", "--factor=2", "--out=t.npz")
  assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0
  assert bad.stderr.startswith("lmcjax: error:") and "image shape" in bad.stderr
