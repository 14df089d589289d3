"""``python -m cnn_flax.convert``: runs :mod:`cnn_flax.cli.convert`."""

import sys

from cnn_flax.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
