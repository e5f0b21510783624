"""Delivery: who gets a meeting's transcript, the email rendered from templates, the outbox
that sends it over SMTP with retries, and retention of what is kept afterwards.

May import: config, errors, store, transcript. Never recording, the engine or service.
"""
