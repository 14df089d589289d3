"""tfds builders for the datasets tfds does not ship: `digits` (offline) and `folder:<path>`."""
