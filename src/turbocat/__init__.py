"""turbocat: build, run, deploy and govern AI-agent workflows."""

__version__ = "0.1.0"
