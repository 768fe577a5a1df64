"""Logging set-up, the same for every Jobwire process (gateway, worker, supervisor, CLI)."""

from __future__ import annotations

import logging

from shared.settings import Settings

__all__ = ["configure_logging"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format=FORMAT)
