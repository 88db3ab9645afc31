"""The ``turbocat`` command line."""
