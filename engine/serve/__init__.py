"""`hubsearch serve`: the engine over HTTP (FastAPI + uvicorn, the `serve` extra).

Only ``engine.serve.wire`` is shared with the client (``engine.remote``), which needs neither
FastAPI nor uvicorn; the app imports them, so nothing here imports it at package import time.
"""
