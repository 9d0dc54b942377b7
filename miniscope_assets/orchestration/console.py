"""The console logger of every run: one line per Dagster event. A failure's stack trace stays
in the run's event log (the UI, and the log file the CLI writes), not on the terminal."""

from __future__ import annotations

import logging
import sys

from dagster import Field, logger


class _FirstLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).splitlines()[0]


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@logger(config_schema={"log_level": Field(str, is_required=False, default_value="INFO"),
                       "show_errors": Field(bool, is_required=False, default_value=True)},
        description="One line per event on stderr; stack traces stay in the event log")
def console(init_context) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FirstLine("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    if not init_context.logger_config["show_errors"]:  # the caller reports the failure itself
        handler.addFilter(_BelowError())
    log = logging.getLogger("miniscope_assets.console")
    log.handlers = [handler]
    log.setLevel(init_context.logger_config["log_level"].upper())
    log.propagate = False
    return log
