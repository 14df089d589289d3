"""The command-line entry points: flags in, library calls out, user errors as one line.

Each command is ``python -m cnn_flax.<command>`` (the old module paths forward here) and a
console script ``cnn-flax-<command>`` (pyproject.toml).
"""
