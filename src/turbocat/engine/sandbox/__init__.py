"""Running untrusted code outside the worker: ``process.py`` (the worker's side) starts
``bootstrap.py`` (standard library only) in a fresh, confined interpreter."""
