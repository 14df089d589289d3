"""The torchvision baseline of the data benchmark (run by benchmark.py in its own process).

torchvision's standard ImageNet train transform (RandomResizedCrop, flip, ToTensor, Normalize)
over the same files, in a DataLoader with one worker per core. Prints `torch img/s: N`.
"""

from __future__ import annotations

import argparse
import json
import os


def torch_batches(paths: list[str], labels: list[int], *, batch_size: int, image_size: int):
    import torch
    from PIL import Image
    from torchvision import transforms

    from cnn_flax.models.layers import IMAGENET_MEAN, IMAGENET_STD

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
        ]
    )

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            with Image.open(paths[i]) as image:
                return transform(image.convert("RGB")), labels[i]

    loader = torch.utils.data.DataLoader(
        Files(),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=os.cpu_count() or 1,
        persistent_workers=True,
        prefetch_factor=4,
    )
    while True:
        yield from loader


def main(argv: list[str] | None = None) -> None:
    from cnn_flax.perf.input_pipeline import best_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", required=True, help='JSON {"paths": [...], "labels": [...]}')
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=1, help="report the best of this many")
    args = parser.parse_args(argv)
    with open(args.files) as f:
        files = json.load(f)
    batches = torch_batches(
        files["paths"], files["labels"], batch_size=args.batch_size, image_size=args.image_size
    )
    rate = best_of(
        iter(batches),
        repeats=args.repeats,
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        desc="torchvision",
    )
    print(f"torch img/s: {rate:.1f}", flush=True)


if __name__ == "__main__":
    main()
