"""The ``mcgf`` command line: a thin layer of argument parsing over the library API."""
