"""Authentication for the dashboard: loopback token, OAuth/OIDC gate, sessions, CSRF, audit.

Every middleware decides what is public through `public_paths`, and nothing else.
"""
