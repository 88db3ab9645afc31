"""Use cases. Each runs inside one transaction opened by its caller and takes ``now``."""
