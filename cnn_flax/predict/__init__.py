"""The old place of ``python -m cnn_flax.predict``;
the command lives in :mod:`cnn_flax.cli.predict`."""
