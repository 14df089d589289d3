"""The old place of ``python -m cnn_flax.evaluate``;
the command lives in :mod:`cnn_flax.cli.evaluate`."""
