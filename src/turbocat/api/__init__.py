"""The HTTP API: thin routes over services, problem+json errors, OpenAPI."""
