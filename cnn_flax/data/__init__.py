"""Input pipelines: tfds datasets, tf.data preprocessing, global device batches.

The trainer's API (see pipeline.py for the determinism design):
  get_dataset_info, get_class_names, create_train_iterator, create_eval_iterator: TensorFlow is
    imported when they are called, not here;
  normalize, augment_batch (random erasing, then mixup / CutMix), mixup_cutmix: JAX functions
    used inside the jitted step;
  imagenet_class_names: the 1000 ImageNet class names (no TensorFlow).
"""

from cnn_flax.data.classes import imagenet_class_names
from cnn_flax.data.iterators import (
    create_eval_iterator,
    create_train_iterator,
    get_class_names,
    get_dataset_info,
    get_held_out_record,
)
from cnn_flax.data.mixing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment_batch,
    mixup_cutmix,
    normalize,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "augment_batch",
    "create_eval_iterator",
    "create_train_iterator",
    "get_class_names",
    "get_dataset_info",
    "get_held_out_record",
    "imagenet_class_names",
    "mixup_cutmix",
    "normalize",
]
