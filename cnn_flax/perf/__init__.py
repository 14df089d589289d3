"""Performance measurement: FLOP counts, device peaks, the compilation cache and timing helpers.

The modules here import jax and flax only; the torchvision side lives in
:mod:`cnn_flax.perf.torch_bench`, which is the only one that imports torch.
"""
