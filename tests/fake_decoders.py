"""Frame sources that misbehave on purpose, loaded by the scan as `--decoders fake_decoders:Name`.

They stand in for what decord does on some real files: hang forever inside C code (so no Python
timeout can stop it) or take the whole process down.
"""

from __future__ import annotations

import os
import signal
import time

from tagger.decode import DecordSource
from tagger.errors import DecodeError


class HangingSource(DecordSource):
    """Opens like decord, then never returns a frame for videos whose name contains 'hang'."""

    name = "hanging"

    def read(self, indices):
        if "hang" in os.path.basename(self.path):
            while True:
                time.sleep(3600)
        yield from super().read(indices)


class CrashingSource(DecordSource):
    """Opens like decord, then kills its own process (SIGSEGV) on videos whose name contains 'crash'."""

    name = "crashing"

    def read(self, indices):
        if "crash" in os.path.basename(self.path):
            os.kill(os.getpid(), signal.SIGSEGV)
        yield from super().read(indices)


class SlowSource(DecordSource):
    """decord, slowed by 0.15 s per video, so a short scan lasts long enough to interrupt it."""

    name = "decord"  # what it stores: the frames are decord's

    def read(self, indices):
        time.sleep(0.15)
        yield from super().read(indices)


class UnopenableSource(DecordSource):
    """Cannot open anything, like decord on a file whose container it does not understand."""

    name = "unopenable"

    def __init__(self, path, short_side):
        raise DecodeError("cannot open this container")


class MidwayFailingSource(DecordSource):
    """Opens, returns a few frames, then fails: the scan must start over with the next decoder."""

    name = "midway"

    def read(self, indices):
        for count, item in enumerate(super().read(indices)):
            if count == 3:
                raise DecodeError("Error sending packet")
            yield item
