"""Progress bars that read well both on a terminal and in a log file.

On a terminal: tqdm as usual. Elsewhere (a log file, CI, `nohup`): the same text as plain
lines, one every `LOG_INTERVAL_S` seconds and one at the end, without the carriage returns
and cursor movements that make a redirected tqdm unreadable.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class LogLines(tqdm):
    """tqdm that appends a line per refresh and never moves the cursor."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        text = self.__str__() if msg is None else msg
        if text.strip():
            self.fp.write(text.strip() + "\n")
            self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        pass

    def moveto(self, n: int) -> None:
        pass


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on a terminal, `LogLines` when stderr (or `file`) is not one."""
    stream = kwargs.get("file") or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(iterable, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return LogLines(iterable, ascii=True, **kwargs)
