"""Downloads and prepares a public dataset with tfds (run where there is network).

  python launch/prepare_data.py --dataset=cifar10 [--data_dir=~/tensorflow_datasets]

On a cluster, run this on a login node; jobs then read the prepared files
offline with config.data.data_dir pointing at the same directory.
"""

from absl import app
from absl import flags

from lmcjax import data

flags.DEFINE_enum("dataset", None, list(data.TFDS_DATASETS), "Dataset to prepare.")
flags.DEFINE_string("data_dir", "", "tfds data_dir ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets).")
flags.mark_flag_as_required("dataset")


def main(argv):
  del argv
  ds = data.load_tfds(flags.FLAGS.dataset, flags.FLAGS.data_dir, download=True)
  print(f"prepared {ds.name}: {len(ds.x_train)} train / {len(ds.x_test)} test images "
        f"{ds.image_shape} in {data.tfds_data_dir(flags.FLAGS.data_dir)}")


if __name__ == "__main__":
  app.run(main)
