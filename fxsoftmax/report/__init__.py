"""What fxsoftmax tells users about a module: the dispatch report read from IREE's output (inspect.py)
and the export folder (bundle.py)."""
