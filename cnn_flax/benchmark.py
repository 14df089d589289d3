"""``python -m cnn_flax.benchmark``: runs :mod:`cnn_flax.cli.benchmark`."""

import sys

from cnn_flax.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
