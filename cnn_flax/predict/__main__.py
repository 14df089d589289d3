"""``python -m cnn_flax.predict``: runs :mod:`cnn_flax.cli.predict`."""

import sys

from cnn_flax.cli.predict import main

sys.exit(main())
