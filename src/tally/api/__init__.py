"""The HTTP entry point: parse, authenticate, call the service, render."""

from tally.api.app import create_app

__all__ = ["create_app"]
