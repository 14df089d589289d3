"""Ablations of the ideas behind the classic CNNs; see experiments/README.md."""
