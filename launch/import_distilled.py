"""Imports a distilled set another project published into lmcjax's validated npz.

  python launch/import_distilled.py --format=idc --dataset=cifar10 \
      --images=results/cifar10/conv3in_..._factor2_..._ipc10/data.pt --out=sets/idc.npz
  python launch/import_distilled.py --format=mtt --dataset=cifar10 --images=images_best.pt \
      --labels=labels_best.pt --lr=0.0213 --out=sets/mtt.npz
  python launch/import_distilled.py --format=datm --dataset=cifar10 \
      --images=Normal/images_best.pt --labels=Normal/labels_best.pt \
      --lr_file=Normal/lr_best.pt --out=sets/datm.npz
  python launch/import_distilled.py --format=frepo --dataset=cifar100 \
      --checkpoint=ckpts_drive/cifar100/ipc1_llTrue \
      --zca=data/zca/cifar100_normalize_zca.npz --out=sets/frepo.npz
  python launch/import_distilled.py --format=rcig --dataset=cifar10 \
      --checkpoint=distilled_images_final/0/cifar10_1/checkpoint_15000 \
      --zca=data/zca/cifar10_normalize_zca.npz --out=sets/rcig.npz

Then run a config on it: --config.distill.load_path=sets/idc.npz. Bad input (an
unknown format or layout, the wrong class count or image shape) is one line.
"""
import sys

from absl import app
from absl import flags

from lmcjax import importers
from lmcjax import validate

flags.DEFINE_string("format", "", f"The published format: {', '.join(importers.FORMATS)}.")
flags.DEFINE_string("dataset", "", "The real dataset, as lmcjax names it (e.g. cifar10).")
flags.DEFINE_string("out", "", "The lmcjax .npz to write.")
flags.DEFINE_string("images", "", "idc: data.pt; mtt, datm: images_best.pt.")
flags.DEFINE_string("labels", "", "mtt, datm: labels_best.pt.")
flags.DEFINE_string("lr_file", "", "mtt, datm: a 0-d tensor of the learned lr (lr_best.pt).")
flags.DEFINE_float("lr", 0.0, "mtt, datm: the learned lr, where no file holds it.")
flags.DEFINE_integer("factor", 0, "idc: the multi-formation factor (0: from the path).")
flags.DEFINE_string("image_space", "", "mtt, datm: 'normalised' (default) or 'pixel'.")
flags.DEFINE_string("checkpoint", "", "frepo, rcig: the flax checkpoint file or directory.")
flags.DEFINE_string("zca", "", "frepo, rcig: <zca_path>/<dataset>_normalize_zca.npz.")
flags.DEFINE_string("soft_labels", "", "Soft labels to classes: 'position' (default), 'argmax'.")


def main(argv):
  del argv
  f = flags.FLAGS
  inputs = importers.Inputs(images=f.images, labels=f.labels, lr_file=f.lr_file,
                            checkpoint=f.checkpoint, zca=f.zca, lr=f.lr, factor=f.factor,
                            image_space=f.image_space, soft_labels=f.soft_labels)
  try:
    meta = importers.import_set(f.format, inputs, f.dataset, f.out)
  except validate.InputError as e:
    sys.exit(f"lmcjax: error: {e}")
  except OSError as e:
    sys.exit(f"lmcjax: error: cannot write {e.filename or f.out!r}: {e.strerror or e}")
  lr = f", learned lr {meta['lr']:.6g}" if "lr" in meta else ""
  print(f"wrote {f.out}: {meta['method']} set of {meta['dataset']}, ipc {meta['ipc']}, "
        f"factor {meta['factor']}{lr}; train on it with --config.distill.load_path={f.out}")


if __name__ == "__main__":
  app.run(main)
