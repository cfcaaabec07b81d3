"""Prefect flows of vigil: thin wrappers, each task calls a plain, separately tested function."""
