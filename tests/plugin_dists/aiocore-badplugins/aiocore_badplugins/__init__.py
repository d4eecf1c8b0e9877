"""Deliberately broken aiocore plugins (one per module)."""
