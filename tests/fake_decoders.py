"""Frame sources that misbehave on purpose, loaded by the scan as `--decoders fake_decoders:Name`.

They stand in for what decord does on some real files: hang forever inside C code (so no Python
timeout can stop it) or take the whole process down.
"""

from __future__ import annotations

import ctypes
import os
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
    """Opens like decord, then crashes its process on videos whose name contains 'crash': a real
    segmentation fault (reading address 0), delivered to the thread that caused it as a decoder's
    would be; a signal sent with os.kill can stay pending in a process whose threads block it."""

    name = "crashing"

    def read(self, indices):
        if "crash" in os.path.basename(self.path):
            ctypes.string_at(0)
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


class PacedSource(DecordSource):
    """decord, 0.1 s per frame, so a scan of a few short videos lasts long enough to break into."""

    name = "decord"  # what it stores: the frames are decord's

    def read(self, indices):
        for item in super().read(indices):
            time.sleep(0.1)
            yield item


class CountingSource(DecordSource):
    """decord, appending the path of every video it opens to the file $TAGGER_TEST_OPEN_LOG, so a
    test can count how often each video was decoded across processes."""

    name = "decord"

    def __init__(self, path, short_side):
        with open(os.environ["TAGGER_TEST_OPEN_LOG"], "a") as log:
            log.write(path + "\n")
        super().__init__(path, short_side)


class SlowFramesSource(DecordSource):
    """decord, 0.25 s per frame: a steady, slow decoder that a pause must not make look hung."""

    name = "decord"

    def read(self, indices):
        for item in super().read(indices):
            time.sleep(0.25)
            yield item
