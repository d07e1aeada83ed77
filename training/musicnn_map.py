"""Which MagnaTagATune tags mean which instrument label: the table `exports/musicnn.onnx` is built from.

musicnn's MTT model scores the 50 most frequent MagnaTagATune tags, a mix of instruments, genres,
moods and voice descriptions (`MTT_TAGS`, in the model's output order, from the wheel's
`configuration.py`). An instrument label's score is the MAX of its tags' sigmoid probabilities:
the tags are independent sigmoids (not a softmax), so summing could exceed 1 and the max keeps the
score a probability of the best-supported tag.

Labels use UCF101's naming (`PlayingGuitar`, `Drumming`, ...), as the video models do, so a scan
can fuse evidence per label. Only tags that name the instrument itself are mapped; the rows'
`reason` say why the near misses are left out. The top-50 list has no "acoustic guitar",
"classical guitar", "electric guitar", "fiddle" or "drum" variants (those are rarer MTT tags the
model does not score), so most labels map to one tag.

All 50 raw tags are exported too, as labels `mtt:<tag>` with threshold 1.01 (never a tag on their
own), so fusion rules or later models can use e.g. `mtt:strings` or `mtt:classical` as context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MTT_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal",
    "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance",
    "male voice", "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal",
    "female voice", "choral",
)
RAW_PREFIX = "mtt:"  # raw MTT tags are exported as labels "mtt:guitar", "mtt:no vocals", ...


@dataclass(frozen=True)
class InstrumentTags:
    """One instrument label and the MTT tags whose maximum probability is its score."""

    label: str
    mtt_tags: tuple[str, ...]
    reason: str


INSTRUMENTS: tuple[InstrumentTags, ...] = (
    InstrumentTags("PlayingGuitar", ("guitar",),
                   "the only guitar tag in the top 50; 'rock', 'metal' and 'country' are genres that "
                   "usually contain guitars but are no evidence that the picture shows one"),
    InstrumentTags("PlayingPiano", ("piano",),
                   "'harpsichord' left out: a plucked, not hammered, keyboard; on the shared clips it "
                   "added nothing for the real pianist (max 0.05) and reached 0.34 on a UCF101 cello "
                   "clip with no keyboard at all; kept as mtt:harpsichord"),
    InstrumentTags("PlayingViolin", ("violin",),
                   "'strings' left out: MTT puts it on string sections, violins and cellos alike "
                   "(0.57 on the shared cello clip, 0.52 on the violin clip), so it cannot say "
                   "which instrument is played"),
    InstrumentTags("PlayingCello", ("cello",),
                   "direct; note the model hears the shared cello clip as violin (0.66) more than "
                   "cello (0.48): audio alone mixes up the two bowed strings"),
    InstrumentTags("PlayingFlute", ("flute",),
                   "direct; pure tones score flute too (a 1 kHz test tone: 0.997), so beeps and test "
                   "tones over a picture without a flute need the video evidence to rule them out"),
    InstrumentTags("Drumming", ("drums",),
                   "'beat', 'beats', 'techno', 'dance' left out: programmed electronic beats, no "
                   "person drumming (and 'beat' reached 0.26 on keyboard typing)"),
    InstrumentTags("PlayingSitar", ("sitar",),
                   "'indian' left out: it covers tabla, vocals and drones as much as sitar"),
    InstrumentTags("PlayingHarp", ("harp",), "direct"),
)


def instrument_labels() -> tuple[str, ...]:
    """The instrument labels, in output order."""
    return tuple(row.label for row in INSTRUMENTS)


def raw_labels() -> tuple[str, ...]:
    """The 50 raw MTT tags as labels, in the model's output order."""
    return tuple(RAW_PREFIX + tag for tag in MTT_TAGS)


def labels() -> tuple[str, ...]:
    """Every exported label: the instruments, then the raw tags."""
    return instrument_labels() + raw_labels()


def tag_mask() -> np.ndarray:
    """`(len(INSTRUMENTS), 50)` float32: 1 where the MTT tag counts towards the label's max."""
    mask = np.zeros((len(INSTRUMENTS), len(MTT_TAGS)), dtype=np.float32)
    for row, instrument in enumerate(INSTRUMENTS):
        for tag in instrument.mtt_tags:
            mask[row, MTT_TAGS.index(tag)] = 1.0
    return mask


def as_card() -> list[dict[str, object]]:
    """The table for the model card and metadata."""
    return [{"label": row.label, "mtt_tags": list(row.mtt_tags), "reason": row.reason} for row in INSTRUMENTS]
