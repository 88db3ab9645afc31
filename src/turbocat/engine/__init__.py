"""The durable execution engine: plans, the step-run store, step runners and workers."""
