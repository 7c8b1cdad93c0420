"""HTTP collector that the device runner talks to: serves fixtures, stores runs and results.

The API is described in docs/collector-api.md; `create_app` builds the FastAPI application and
`parbench serve` (``serve_command``) runs it with uvicorn.
"""
