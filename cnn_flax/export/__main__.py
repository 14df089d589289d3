"""``python -m cnn_flax.export``: runs :mod:`cnn_flax.cli.export`."""

import sys

from cnn_flax.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
