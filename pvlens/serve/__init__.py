"""`pvlens serve`: a local steering playground (one page; unsteered and steered replies side by side)."""

from pvlens.serve.app import create_app, serve_in_background
from pvlens.serve.session import ServeSettings, Session, SteerRequest, TraitAlpha

__all__ = ["ServeSettings", "Session", "SteerRequest", "TraitAlpha", "create_app", "serve_in_background"]
