"""The ingress: one OpenAI-compatible port in front of every profile's gateway.

keys.py holds the ingress key, directory.py finds profiles (port, key, state) per
request, forward.py relays one request to a gateway, app.py is the ASGI surface and
server.py runs it under uvicorn (`hermes ingress run`).
"""
