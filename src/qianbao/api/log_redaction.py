"""Keep personal data out of access logs.

Some query strings carry phone numbers (`/v1/recipients?phone=…`, `/v1/sandbox/messages?to=…`). The
uvicorn access log would write them in clear, so its records lose their query string here: the path and
status are enough to operate the service.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


class DropQueryStrings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's access records: (client address, method, full path, HTTP version, status code)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0] + "?…", args[3], args[4])
        return True


def install() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, DropQueryStrings) for f in logger.filters):
        logger.addFilter(DropQueryStrings())
