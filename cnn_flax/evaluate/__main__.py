"""``python -m cnn_flax.evaluate``: runs :mod:`cnn_flax.cli.evaluate`."""

import sys

from cnn_flax.cli.evaluate import cli

sys.exit(cli())
