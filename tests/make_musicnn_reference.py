"""Regenerate tests/data/musicnn_reference.npz: the ORIGINAL musicnn (TensorFlow graph + librosa) on fixed audio.

This is the only place TensorFlow and librosa are used, and they never enter the project's venv
(the wheel pins numpy<1.17 and TF 1). Run it in a throwaway venv:

    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn
    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu librosa av numpy
    /tmp/tfenv/bin/python tests/make_musicnn_reference.py --wheel /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl

(recorded with tensorflow-cpu 2.21.0, librosa 0.11.0, numpy 2.4.6, av 18.1.0).

What it stores, per row (3 s patches of 3 shared clips' soundtracks + one synthetic chord):
- `audio_int16` `(R, 48128)`: 16 kHz mono PCM (PyAV resampler), quantised to int16 so the file
  stays small; every reference below was computed from the int16-quantised sound.
- `log_mel` `(R, 187, 96)`: what the wheel's `extractor.py` feeds the network: librosa's
  `melspectrogram(n_fft=512, hop_length=256, n_mels=96, pad_mode="reflect")` of the WHOLE
  soundtrack (centred frames; reflect: the default of the librosa musicnn was trained with, librosa
  >= 0.10 pads with zeros), then `log10(10000 * x + 1)` in float32, cut at the 187 frames whose
  windows lie inside the row's 48128 samples (frame f is centred on sample 256 f, so the row starts
  at sample 256 (f0 - 1)).
- `probs` `(R, 50)`: the original graph (`MTT_musicnn/.meta`, forward part only, variables read with
  TensorFlow's own checkpoint reader, is_training=False) on `log_mel`, through its sigmoid.
- `probs_float16_mel`: the same with the wheel's float16 cast of the mel power (for information).
- `mel_matrix` `(96, 257)`: `librosa.filters.mel(sr=16000, n_fft=512, n_mels=96)`.

It also writes `tests/data/tiny_tf_checkpoint/ckpt.{index,data-00000-of-00001}` with TensorFlow's own
SaveV2, so `training.tf_checkpoint` is tested without the wheel.
"""

from __future__ import annotations

import argparse
import tempfile
import zipfile
from pathlib import Path

import av
import librosa
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

SAMPLE_RATE, N_FFT, HOP, N_MELS, FRAMES = 16000, 512, 256, 96, 187
SAMPLES = (FRAMES - 1) * HOP + N_FFT  # 48128: one patch of unpadded frames
CLIPS = (  # (file in ../shared/data/clips, start second of the patch)
    ("vta-ldm__0DCit2EBtjs_000030.mp4", 3.0),  # singer with acoustic guitar
    ("maskvat.github.io__cello.mp4", 2.0),  # cellist on stage
    ("musicalgestures__pianist.avi", 30.0),  # solo piano
)
OUT = Path(__file__).resolve().parent / "data" / "musicnn_reference.npz"
SHARED_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "clips"


def decode(path: Path) -> np.ndarray:
    """The first audio stream as 16 kHz mono float32, the way the tagger decodes it."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        for frame in container.decode(container.streams.audio[0]):
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32)


def synthetic_chord(seconds: float = 9.0) -> np.ndarray:
    """A 220/277/330 Hz chord with decaying harmonics, plus a little noise (fixed seed)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = sum(0.2 / h * np.sin(2 * np.pi * f * h * t) for f in (220.0, 277.18, 329.63) for h in (1, 2, 3))
    return (tone + 0.01 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


def quantised(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)


def patch(audio_int16: np.ndarray, start: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row PCM int16, its log-mel cut from the whole track's, the same with the wheel's float16 cast)."""
    whole = audio_int16.astype(np.float32) / 32768
    first_frame = int(round(start * SAMPLE_RATE / HOP)) + 1  # the frame whose window starts the row
    first = (first_frame - 1) * HOP
    rows = [log_mel(whole, f16)[first_frame:first_frame + FRAMES] for f16 in (False, True)]
    assert rows[0].shape == (FRAMES, N_MELS), "excerpt too close to the end of the track"
    return audio_int16[first:first + SAMPLES], rows[0], rows[1]


def log_mel(audio: np.ndarray, float16: bool = False) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=audio, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                                         pad_mode="reflect").T
    if float16:
        mel = mel.astype(np.float16)
    return np.log10(10000 * mel + 1).astype(np.float32)


def original_graph(checkpoint_prefix: str):
    """The forward part of the training graph, its variables frozen to the checkpoint's values."""
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(Path(checkpoint_prefix + ".meta").read_bytes())
    graph_def = tf.compat.v1.graph_util.extract_sub_graph(meta.graph_def, ["model/Sigmoid"])
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_prefix)  # the prefix itself, not the stale "checkpoint" file
    frozen = tf.compat.v1.GraphDef()
    for node in graph_def.node:
        node.attr.pop("_output_shapes", None)
        if node.op == "VariableV2":
            value = reader.get_tensor(node.name)
            const = tf.compat.v1.NodeDef(name=node.name, op="Const")
            const.attr["dtype"].type = tf.float32.as_datatype_enum
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
            node = const
        frozen.node.append(node)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(frozen, name="")
    return graph


def tiny_checkpoint_variables() -> dict[str, np.ndarray]:
    """Variables of the small checkpoint the reader test uses: several dtypes and shapes, and 256
    names, so the index block has many prefix-compressed keys and restart points (TensorFlow writes
    one block for an index this small). tests/test_musicnn.py rebuilds them."""
    variables = {f"layer_{i:03d}/kernel": np.arange(i % 7 + 1, dtype=np.float32).reshape(-1, 1) * (i + 0.5)
                 for i in range(250)}
    variables |= {"scalar": np.float32(3.25), "ints": np.arange(6, dtype=np.int32).reshape(2, 3),
                  "longs": np.array([-1, 2**40], dtype=np.int64), "halves": np.array([0.5, -2.0], dtype=np.float16),
                  "doubles": np.linspace(0, 1, 5), "flags": np.array([True, False])}
    return variables


def write_tiny_checkpoint(prefix: Path) -> None:
    """Save tiny_checkpoint_variables() with TensorFlow's own SaveV2 (the format the wheel ships)."""
    names = sorted(tiny_checkpoint_variables())
    values = [tf.constant(tiny_checkpoint_variables()[name]) for name in names]
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", required=True, help="musicnn-0.1.0-py3-none-any.whl")
    args = parser.parse_args()
    tracks = [(f"{name}@{start}s", quantised(decode(SHARED_CLIPS / name)), start) for name, start in CLIPS]
    tracks.append(("synthetic chord 220/277/330 Hz + noise@3.0s", quantised(synthetic_chord()), 3.0))
    sources = [source for source, _, _ in tracks]
    audio_int16, mels, mels16 = (np.stack(column) for column in zip(*(patch(a, s) for _, a, s in tracks)))
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(args.wheel) as wheel:
            wheel.extractall(folder, [n for n in wheel.namelist() if "/MTT_musicnn/" in n])
        graph = original_graph(folder + "/musicnn/MTT_musicnn/")
        with tf.compat.v1.Session(graph=graph) as session:
            def run(x: np.ndarray) -> np.ndarray:
                return session.run("model/Sigmoid:0", {"model/Placeholder:0": x, "model/Placeholder_2:0": False})
            probs, probs16 = run(mels), run(mels16)
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, audio_int16=audio_int16, log_mel=mels, probs=probs.astype(np.float32),
                        probs_float16_mel=probs16.astype(np.float32),
                        mel_matrix=librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32),
                        sources=np.array(sources), versions=np.array(
                            [f"tensorflow {tf.__version__}", f"librosa {librosa.__version__}", f"numpy {np.__version__}"]))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    write_tiny_checkpoint(OUT.parent / "tiny_tf_checkpoint" / "ckpt")
    print(f"wrote {OUT.parent / 'tiny_tf_checkpoint'}")
    for source, row in zip(sources, probs):
        print(source, np.round(row, 3).tolist())


if __name__ == "__main__":
    main()
