"""Resampling timestamped streams to one control rate, refusing streams that do not line up.

The rules, in the order they are checked:

1. Clocks: a stream's offset is the median of (stamp - receive time) over its messages. A
   stream whose offset is more than ``max_offset`` seconds from the others' (their median) was
   stamped by another clock: "unsynchronised streams".
2. Overlap: steps span the time every stream covers, from the latest first message to the
   earliest last one. If that window is empty, or shorter than half the shortest stream, the
   streams were recorded at different times: "unsynchronised streams".
3. Ticks: one every ``1 / rate`` seconds over the window, starting at its beginning.
4. Zero-order hold: each stream gives, at each tick, its latest message at or before the tick.
   If that message is older than ``max_gap`` seconds: "timestamp gap", naming the stream, the
   length of its hole and when it began.

Times in messages are seconds since the earliest first message of the streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mp1.data.importers.common import RecordingError

Times = npt.NDArray[np.int64]
NS = 1_000_000_000


@dataclass(frozen=True)
class Stream:
    """One stream's messages in stamp order: stamps and receive times (integer nanoseconds) and
    a value per message (first axis)."""

    name: str
    stamps: Times
    received: Times
    values: npt.NDArray[Any]

    @classmethod
    def sorted(cls, name: str, stamps: Sequence[int], received: Sequence[int], values: npt.ArrayLike) -> Stream:
        """A stream from messages in bag order; a stream whose stamps are all zero (a driver that
        leaves them unset) is timed by when the messages were received."""
        if len(received) == 0:
            raise RecordingError(f"{name} has no messages")
        stamp_array, received_array = np.asarray(stamps, dtype=np.int64), np.asarray(received, dtype=np.int64)
        if not stamp_array.any():
            stamp_array = received_array
        order = np.argsort(stamp_array, kind="stable")
        return cls(name, stamp_array[order], received_array[order], np.asarray(values)[order])

    @property
    def start(self) -> int:
        return int(self.stamps[0])

    @property
    def end(self) -> int:
        return int(self.stamps[-1])


@dataclass(frozen=True)
class Schedule:
    """The control ticks, and for each stream the index of the message held at each tick."""

    ticks: Times
    held: dict[str, npt.NDArray[np.int64]]
    origin: int  # the earliest first message, the zero of reported times

    def seconds(self, tick: int) -> float:
        return (int(self.ticks[tick]) - self.origin) / NS


def synchronise(streams: Sequence[Stream], rate: float, max_gap: float, max_offset: float) -> Schedule:
    """Ticks at ``rate`` Hz and each stream's held message per tick, by the rules above."""
    if not streams:
        raise RecordingError("no streams to synchronise")
    check_clocks(streams, max_offset)
    origin = min(stream.start for stream in streams)
    start, end = check_overlap(streams, origin)
    period = NS / rate
    ticks = start + np.round(np.arange(int((end - start) // period) + 1) * period).astype(np.int64)
    return Schedule(ticks, {stream.name: hold(stream, ticks, max_gap, origin) for stream in streams}, origin)


def check_clocks(streams: Sequence[Stream], max_offset: float) -> None:
    offsets = np.array([np.median(stream.stamps - stream.received) / NS for stream in streams])
    reference = float(np.sort(offsets)[(len(offsets) - 1) // 2])
    worst = int(np.argmax(np.abs(offsets - reference)))
    if abs(offsets[worst] - reference) > max_offset:
        raise RecordingError(
            f"unsynchronised streams: {streams[worst].name} is stamped {offsets[worst]:+.2f} s from when it was "
            f"received, the other streams {reference:+.2f} s (max {max_offset:g} s apart): their clocks differ"
        )


def check_overlap(streams: Sequence[Stream], origin: int) -> tuple[int, int]:
    """The window every stream covers, as (start, end) in nanoseconds."""
    late = max(streams, key=lambda stream: stream.start)
    early = min(streams, key=lambda stream: stream.end)
    window = early.end - late.start
    shortest = min(stream.end - stream.start for stream in streams)
    if window < 0 or window < shortest / 2:
        def span(stream: Stream) -> str:
            return f"{(stream.start - origin) / NS:.1f}-{(stream.end - origin) / NS:.1f} s"

        overlap = "do not overlap" if window < 0 else f"overlap for {window / NS:.2f} s only"
        raise RecordingError(f"unsynchronised streams: {late.name} spans {span(late)} and {early.name} "
                             f"{span(early)}; they {overlap}")
    return late.start, early.end


def hold(stream: Stream, ticks: Times, max_gap: float, origin: int) -> npt.NDArray[np.int64]:
    """Index of the latest message at or before each tick (every tick is at or after the
    stream's first message)."""
    held = np.searchsorted(stream.stamps, ticks, side="right") - 1
    late = np.flatnonzero(ticks - stream.stamps[held] > max_gap * NS)
    if late.size:
        before = int(held[late[0]])
        after = min(before + 1, len(stream.stamps) - 1)
        hole = (stream.stamps[after] - stream.stamps[before]) / NS
        raise RecordingError(f"timestamp gap: {stream.name} has no message for {hole:.2f} s at "
                             f"t={(stream.stamps[before] - origin) / NS:.2f} s (max_gap {max_gap:.3g} s)")
    return held
