"""``python -m cnn_flax.models``: runs :mod:`cnn_flax.cli.models`."""

import sys

from cnn_flax.cli.models import main

if __name__ == "__main__":
    sys.exit(main())
