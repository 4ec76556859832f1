"""MkDocs hook (`hooks:` in mkdocs.yml): docstring warnings from modules whose docstrings are not
yet in Google style are logged as INFO, so that `mkdocs build --strict` checks every other module.

Take a module off `PENDING` once its docstrings are converted; an empty tuple checks them all.
"""

from __future__ import annotations

import logging
from typing import Any

PENDING: tuple = ()


class _PendingDocstrings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and any(path in record.getMessage() for path in PENDING):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def on_startup(command: str, dirty: bool, **kwargs: Any) -> None:
    logger = logging.getLogger("mkdocs.plugins.griffe")
    if not any(isinstance(f, _PendingDocstrings) for f in logger.filters):
        logger.addFilter(_PendingDocstrings())
