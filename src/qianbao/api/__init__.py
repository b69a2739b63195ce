"""The HTTP API (FastAPI): routers per capability, problem+json errors, OpenAPI at /openapi.json."""
