"""Vendor adapters: each turns one vendor's stream into the project's own small event types."""
