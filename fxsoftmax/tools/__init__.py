"""Evaluation tools beside the library: the model zoo, the shape matrix, the benchmark, the demo and the
built-in models they run (the CLI's `zoo`, `bench`, `demo` and `export MODEL`)."""
