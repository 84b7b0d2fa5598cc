"""The ASGI target for `uvicorn app.main:app`: settings from the environment, JSON logs."""

from __future__ import annotations

import os

from app.factory import create_app
from config.settings import load_settings_or_exit
from telemetry.jsonlog import configure_logging

settings = load_settings_or_exit(os.environ)
configure_logging(settings.log_level)
app = create_app(settings, env=os.environ)
