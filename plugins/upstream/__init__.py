"""Shared machinery of upstream-CA adapters: mutual-TLS sessions, credentials, usernames."""
