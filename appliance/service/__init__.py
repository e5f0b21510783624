"""The service: the daemon that wires the stages together, its control socket and client, the
HTTP API (web, tokens, jobs), the button and LED, systemd's notify socket and journald, and the
checks of check-config.

May import every other part of the package; nothing imports it but the CLI.
"""
