"""``python -m cnn_flax.data.benchmark``: the input-pipeline benchmark lives in
:mod:`cnn_flax.perf.input_pipeline`."""

from cnn_flax.perf.input_pipeline import main

if __name__ == "__main__":
    main()
