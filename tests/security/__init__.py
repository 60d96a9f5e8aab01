"""Security: API keys and roles, TLS and mutual TLS, hostile ids and filters."""
