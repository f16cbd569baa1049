"""The web dashboard: FastAPI app, server-rendered pages, JSON API and the auth gate.

Nothing here is imported by `hermes_container.cli`; `hermes dashboard` imports it
when it runs, so the other commands never pay for FastAPI, uvicorn or authlib.
"""
