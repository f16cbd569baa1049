"""The per-profile gateway: `hermes [-p P] gateway run`.

Modules, one responsibility each: `settings` (config.yaml + .env), `lock` (flock +
pidfile, takeover), `readiness` (s6 notification fd), `relay` (upstream client),
`sessions` (SQLite store), `app` (HTTP routes), `runner` (the process lifecycle),
`environment` (the variables no gateway may see; also used by the slot scripts).
Nothing heavy is imported here, so `hermes gateway status` stays light.
"""
