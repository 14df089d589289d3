"""Published sets by name, downloaded from a host on 127.0.0.1: torchvision's URL paths through
CNN_FLAX_WEIGHTS_MIRROR (the SHA-256 prefix in the file name checked), the Hugging Face Hub
through HF_ENDPOINT; an interrupted transfer, then a rerun; each error in one line."""

import dataclasses
import hashlib
import io

import numpy as np
import pytest

from cnn_flax import weights
from cnn_flax.models import registry
from tests.weights.servers import Host, serve

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.torch
MODEL = "squeezenet1_1"


@pytest.fixture(scope="module")
def state_dict_bytes():
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(torchvision.models.squeezenet1_1().state_dict(), buffer)
    return buffer.getvalue()


@pytest.fixture
def host(monkeypatch, tmp_path):
    h = Host()
    with serve(h) as base:
        monkeypatch.setenv("CNN_FLAX_WEIGHTS_MIRROR", base)
        monkeypatch.setenv("CNN_FLAX_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("HF_ENDPOINT", base)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        yield h


def _publish(monkeypatch, data: bytes, *, prefix: str | None = None) -> str:
    """Registers the test's file as MODEL's default set, at a torchvision-style URL whose name
    carries ``prefix`` (its SHA-256's start unless given); returns the URL path."""
    prefix = prefix or hashlib.sha256(data).hexdigest()[:8]
    info = registry.model_info(MODEL)
    row = dataclasses.replace(info.weights[0], url=f"{registry.TORCHVISION_URL}t-{prefix}.pth")
    monkeypatch.setitem(registry._REGISTRY, MODEL, dataclasses.replace(info, weights=(row,)))
    return f"/models/t-{prefix}.pth"


def test_real_rows_resolve_to_the_real_url_paths(host, state_dict_bytes):
    """The committed row's URL reaches the mirror at torchvision's path; the file there is not
    the published one, so its SHA-256 prefix fails and nothing is kept."""
    url = registry.model_info(MODEL).weights[0].url
    host.add(url.split("download.pytorch.org")[1], state_dict_bytes)
    with pytest.raises(weights.WeightsError, match="expected b8a52dc0") as err:
        weights.load(MODEL, "IMAGENET1K_V1")
    assert "\n" not in str(err.value) and "was not kept" in str(err.value)
    assert host.requests == ["GET /models/squeezenet1_1-b8a52dc0.pth"]


def test_by_name_through_the_mirror(host, monkeypatch, state_dict_bytes, tmp_path):
    host.add(_publish(monkeypatch, state_dict_bytes), state_dict_bytes)
    for name in ("IMAGENET1K_V1", "DEFAULT"):
        variables, provenance = weights.load(MODEL, name)
        assert provenance.published == {"source": "torchvision", "tag": "IMAGENET1K_V1",
                                        "match": "sha256"}  # fmt: skip
    assert len(host.requests) == 1  # the second load read the cache
    assert provenance.preprocessing["resize"] == 256
    expected = torch.load(io.BytesIO(state_dict_bytes), weights_only=True)
    kernel = variables["params"]["classifier"]["kernel"] if "classifier" in variables[
        "params"] else None  # fmt: skip
    assert provenance.tensors == len(expected)
    del kernel


def test_interrupted_then_rerun(host, monkeypatch, state_dict_bytes):
    host.add(_publish(monkeypatch, state_dict_bytes), state_dict_bytes)
    host.cut_after = len(state_dict_bytes) // 3
    with pytest.raises(weights.WeightsError, match="interrupted|cannot download") as err:
        weights.load(MODEL, "IMAGENET1K_V1")
    assert "\n" not in str(err.value)
    cache = list((weights.cache_dir()).rglob("*"))
    assert not [p for p in cache if p.is_file()]  # nothing that looks finished, no .part left
    host.cut_after = None
    _, provenance = weights.load(MODEL, "IMAGENET1K_V1")
    assert provenance.published["match"] == "sha256"


def test_errors_are_one_line(host, monkeypatch, state_dict_bytes):
    def one_line(match, *args):
        with pytest.raises(weights.WeightsError, match=match) as err:
            weights.load(*args)
        assert "\n" not in str(err.value)
        return str(err.value)

    one_line(r"no published weight set of squeezenet1_1\. Did you mean: IMAGENET1K_V1", MODEL,
             "IMAGENET1K_V2")  # fmt: skip
    one_line("--weights squeezenet1_1", MODEL, "IMAGENET1K_V9")
    one_line("is a weight set of resnet50, not of squeezenet1_1", MODEL, "timm:resnet50.a1_in1k")
    _publish(monkeypatch, state_dict_bytes)
    one_line("404", MODEL, "IMAGENET1K_V1")  # nothing served there
    _publish(monkeypatch, state_dict_bytes, prefix="00000000")
    host.add("/models/t-00000000.pth", state_dict_bytes)
    one_line("expected 00000000.*was not kept", MODEL, "IMAGENET1K_V1")
    assert not [p for p in weights.cache_dir().rglob("*") if p.is_file()]
    monkeypatch.setenv("CNN_FLAX_WEIGHTS_MIRROR", "http://127.0.0.1:9")  # nothing listens
    one_line("cannot download .*offline", MODEL, "IMAGENET1K_V1")


def test_hub_by_name_through_hf_endpoint(host, tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.numpy import save as save_safetensors

    model = timm.create_model("mobilenetv3_small_100", pretrained=False)
    data = save_safetensors({k: v.numpy() for k, v in model.state_dict().items()})
    host.add_hub("timm/mobilenetv3_small_100.lamb_in1k", "model.safetensors", data)
    _, provenance = weights.load("mobilenet_v3_small", "timm:lamb_in1k")
    assert provenance.format == "timm" and provenance.container == "safetensors"
    assert provenance.published == {"source": "timm", "tag": "mobilenetv3_small_100.lamb_in1k",
                                    "match": "name"}  # fmt: skip
    assert "GET /timm/mobilenetv3_small_100.lamb_in1k/resolve/main/model.safetensors" in (
        host.requests
    )
    with pytest.raises(weights.WeightsError, match="Hugging Face Hub") as err:
        weights.load("mobilenet_v3_small", "timm:tf_mobilenetv3_small_100.in1k")  # not served
    assert "\n" not in str(err.value)
    np.testing.assert_equal(len(provenance.sha256), 64)


def test_predict_with_a_published_set(host, monkeypatch, state_dict_bytes, tmp_path, capsys):
    """`python -m cnn_flax.predict --model=M --weights=TAG IMAGE` downloads the set and
    classifies with its own preprocessing (squeezenet1_1 V1: resize 256, crop 224)."""
    from PIL import Image

    from cnn_flax.cli import predict

    host.add(_publish(monkeypatch, state_dict_bytes), state_dict_bytes)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)).save(image)
    assert predict.main(["--model", MODEL, "--weights", "IMAGENET1K_V1", str(image)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(image) and len(out) == 6
    assert predict.main(["--weights", "IMAGENET1K_V1", str(image)]) == 2
    assert "--weights needs --model" in capsys.readouterr().err


def test_convert_cli_takes_a_name(host, monkeypatch, state_dict_bytes, tmp_path, capsys):
    from cnn_flax.cli.convert import main as convert_main

    host.add(_publish(monkeypatch, state_dict_bytes), state_dict_bytes)
    out = tmp_path / "ckpt"
    assert convert_main([f"--model={MODEL}", "--weights=IMAGENET1K_V1", f"--out={out}"]) == 0
    assert out.exists()
    assert "4.73M/4.73M" in capsys.readouterr().err  # the progress bar: MB, rate, time left
    assert convert_main([f"--model={MODEL}", "--weights=IMAGENET1K_V7", f"--out={out}2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no published weight set of squeezenet1_1" in err[0]


def test_init_from_a_name_takes_the_sets_normalisation():
    """timm's TF port of Lite0 was trained on mean/std 0.5, the model's default set on 127/128:
    init_from=timm:... makes the run normalise as that set, unless the flags say otherwise."""
    from cnn_flax.cli.train import load_config

    name = "timm:tf_efficientnet_lite0.in1k"
    config = load_config("finetune:efficientnet_lite0", [f"init_from={name}"])
    assert (config.data.mean, config.data.std) == ((127.5,) * 3, (127.5,) * 3)
    config = load_config("finetune:efficientnet_lite0", [f"init_from={name}", "data.std=(1,1,1)"])
    assert config.data.mean == (127.0,) * 3 and config.data.std == (1.0,) * 3
