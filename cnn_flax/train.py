"""``python -m cnn_flax.train``: the training command lives in :mod:`cnn_flax.cli.train`."""

import sys

from cnn_flax.cli.train import cli

if __name__ == "__main__":
    sys.exit(cli())
