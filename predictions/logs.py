"""Logging set-up shared by the processes that do not configure their own."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send the service's own log lines to stderr at ``level``, once per process."""
    for name in ("predictions", "api"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(FORMAT))
            logger.addHandler(handler)
            # Our handler prints them; a root handler (if any) would print them twice.
            logger.propagate = False
