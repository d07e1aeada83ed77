"""Build the shipped default models: `exports/default.onnx` (vision) and `exports/default_audio.onnx` (sound).

    python -m training.build_default                      # the video corpus + ../shared/data; no network
    python -m training.build_default --no-scan-speed      # skip the scan-speed measurement (~3 min)

Model v3 is trained, calibrated and chosen on real video (`training/corpus_videos.tsv`, rebuilt by
`python -m training.video_corpus build DIR`), with the photos of `../shared/data/corpus` as extra
training examples only. Every step goes through the tagger's own decoding and windows:
1. corpus-guard on every manifest: rows it names (sources kept aside for evaluation) are refused;
2. the split: fold 0 of 5 by split group is the test split, never used to fit, calibrate or choose;
3. the backbone half (`training/window_parts.py`: Lite0 once per whole frame, region pooling,
   ImageNet priors) exported and quantised to INT8 on windows of fit videos, then run on every
   window of every file: the head learns from exactly what the scan computes;
4. out-of-fold scores of the fit videos (4 folds by group: each video scored by a head fitted
   without its group) choose the thresholds (`training/video_eval.py`) and the sound's fusion support;
5. the projection (PCA of the pooled features) and the heads fitted on every fit file;
6. the graphs assembled (`training/assemble.py`, `training/audio_head.py`) and described (features,
   head, thresholds, what was measured), then measured as a user runs them: bench/eval_default.py on
   the test split against the previous default (the gate), and bench/scan_speed.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagger.contract import ModelContract
from tagger.deriver import Deriver
from tagger.fusion import FusionRules
from training.assemble import append_head, features_from_parts
from training.audio_head import HIDDEN, append_audio_head, mtt_prior_columns
from training.calibrate import ThresholdRule
from training.corpus import CorpusError, CorpusItem, group_fold, read_manifest, split_groups
from training.frame_head import Examples, HeadConfig, fit_head, head_scores, prior_head
from training.frame_net import Projection, WindowFeatures
from training.imagenet_map import tag_names
from training.musicnn_map import MTT_TAGS, RAW_PREFIX
from training.tags import targets
from training.video_eval import Truth, best_windows, choose_thresholds, video_table
from training.default_files import audio_metadata, feature_space, ship, vision_metadata
from training.window_parts import (POOLED, WindowParts, audio_parts_graph, export_parts, extract, extract_audio,
                                   parts_contract, window_inputs_sample)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GUARD = SHARED.parent / "tools" / "corpus-guard"
TAGS = ("PlayingGuitar", "PlayingPiano", "PlayingViolin", "PlayingCello", "PlayingFlute", "Drumming",
        "PlayingSitar", "PlayingTabla", "PlayingBanjo", "PlayingHarp", "PlayingAccordion", "PlayingSaxophone",
        "PlayingTrumpet", "PlayingTrombone", "PlayingMarimba", "PlayingOrgan", "PlayingBassoon", "PlayingOboe",
        "PlayingFrenchHorn", "PlayingHarmonica")
AUDIO_TAGS = ("PlayingGuitar", "PlayingPiano", "PlayingViolin", "PlayingCello", "PlayingFlute", "Drumming",
              "PlayingSitar", "PlayingTabla", "PlayingHarp", "PlayingSaxophone")
LEFT_OUT = {  # one 80-column line each in `tagger models`
    "PlayingDaf": "no video or photo of one to learn from: needs UCF101",
    "PlayingDhol": "6 photos, no video: too few to learn or measure; needs UCF101",
    "PlayingClarinet": "2 video sources only: too few; read as oboe",
}
FUSION_SUPPORTS = (0.5, 0.6, 0.7, 0.8, 1.0)
SAMPLE_RATE, PATCH_SECONDS = 16000, 3.008  # the shipped musicnn's input


@dataclass(frozen=True)
class DefaultModelConfig:
    """What the default model samples, how its heads learn, how thresholds are chosen."""

    clip_len: int = 4  # frames per window, 1 s apart: 4 s windows, as v2 (measured the same at twice the cost with 8)
    fps: float = 1.0
    dim: int = 256  # PCA components of the pooled features (plus 18 priors): 0.5 KB a window stored
    head: HeadConfig = field(default_factory=HeadConfig)
    l2_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)  # per tag, the one out-of-fold videos favour (see choose_l2)
    thresholds: ThresholdRule = ThresholdRule(negatives_over=0.003)  # per tag, of held-out videos not showing it
    calibration_windows: int = 200  # INT8 calibration: windows of fit videos
    measure_scan_speed: bool = True
    version: str = "3"


@dataclass
class Corpus:
    """Every file the build learns from or holds out, split by group."""

    items: list[CorpusItem]

    def fit(self) -> list[CorpusItem]:
        return [i for i in self.items if not i.in_test_split and i.split_group != "shared"]

    def fold(self, item: CorpusItem) -> int:
        return group_fold(item.split_group, 5)


def guard(manifests: list[Path]) -> None:
    """corpus-guard on every manifest: CorpusError naming the first reserved row."""
    if not GUARD.is_file():
        return
    for manifest in manifests:
        done = subprocess.run([sys.executable, str(GUARD), str(manifest)], capture_output=True, text=True)
        if done.returncode != 0:
            first = (done.stdout or done.stderr).strip().splitlines()[0]
            raise CorpusError(f"corpus-guard refuses {manifest}: {first}")


def load_corpus(video_root: Path, video_manifest: Path, photo_root: Path | None, shared_clips: bool = True) -> Corpus:
    """The video corpus, the photo corpus and (with `shared_clips`) the shared clips, always held out."""
    import csv

    manifests = [video_manifest] + ([photo_root / "MANIFEST.tsv"] if photo_root else [])
    guard(manifests)
    items = read_manifest(video_root, video_manifest)[0] + (read_manifest(photo_root)[0] if photo_root else [])
    clips = SHARED / "MANIFEST.tsv"
    if shared_clips and clips.is_file():
        with clips.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if row["label"] != "broken":
                    items.append(CorpusItem(SHARED / row["file"], "NoInstrument" if row["label"] == "other" else
                                            row["label"], "video", "shared:" + row["file"], "", row["sha256"]))
    groups = split_groups(items)
    items = [dataclasses.replace(i, split_group="shared" if i.group.startswith("shared:") else groups[i.path])
             for i in items]
    return Corpus(items)


def in_span(item: CorpusItem, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which windows lie (by their middle) in the item's labelled span."""
    middle = (starts + ends) / 2
    return (middle >= (item.start or 0.0)) & (middle <= (item.end if item.end is not None else np.inf))


def examples(rows: list[tuple[CorpusItem, np.ndarray]], tags: tuple[str, ...], photo_weight: float) -> Examples:
    """Training windows from (item, per-window features): each group weighs the same."""
    per_group: dict[str, int] = {}
    for item, x in rows:
        per_group[item.split_group] = per_group.get(item.split_group, 0) + len(x)
    xs, ys, ws = [], [], []
    for item, x in rows:
        xs.append(x)
        ys.append(np.tile(targets(item.label, item.also, tags), (len(x), 1)))
        ws.append(np.full(len(x), (photo_weight if item.kind == "image" else 1.0) / per_group[item.split_group]))
    return Examples(np.concatenate(xs), np.concatenate(ys), np.concatenate(ws))


def truth_of(item: CorpusItem, tags: tuple[str, ...]) -> Truth:
    return Truth(item.path.name, item.label, tuple(targets(item.label, item.also, tags)))


class Build:
    """One build: every step's results, kept for the card."""

    def __init__(self, corpus: Corpus, config: DefaultModelConfig, work: Path, echo=print):
        self.corpus, self.config, self.work, self.echo = corpus, config, work, echo
        self.contract = parts_contract(config.clip_len, config.fps)
        self.card: dict = {"measured": {}, "choices": {}}
        self.l2: list[float] | None = None  # per tag, once chosen

    # -- the backbone half ---------------------------------------------------------------------------------
    def parts_graph(self) -> Path:
        """The quantised parts graph, calibrated on windows of fit videos (cached in the work folder)."""
        from training.pretrained import load_lite0
        from training.quantise import quantise

        fit_videos = [i.path for i in self.corpus.fit() if i.kind == "video"]
        key = hashlib.sha256(json.dumps([self.config.clip_len, self.config.calibration_windows,
                                         sorted(map(str, fit_videos))]).encode()).hexdigest()[:12]
        target = self.work / f"parts-{key}.onnx"
        if target.is_file():
            return target
        self.work.mkdir(parents=True, exist_ok=True)
        float_graph = self.work / "parts-float.onnx"
        export_parts(WindowParts(WindowFeatures(load_lite0(), Projection.identity())).eval(), float_graph,
                     self.config.clip_len)
        rng = np.random.default_rng(0)
        chosen = [fit_videos[i] for i in rng.permutation(len(fit_videos))]
        windows: list[np.ndarray] = []
        for path in chosen:
            if len(windows) >= self.config.calibration_windows:
                break
            try:
                windows += window_inputs_sample(path, self.contract, 2)
            except Exception:  # noqa: BLE001 - an unreadable file calibrates nothing
                continue
        self.echo(f"quantising the backbone on {len(windows)} windows of fit videos")
        quantise(float_graph, target, windows[: self.config.calibration_windows], float_convs=(0, -2, -1))
        self.card["int8_calibration"] = f"{min(len(windows), self.config.calibration_windows)} windows of fit videos"
        return target

    def extract_all(self, graph: Path) -> dict[str, tuple[CorpusItem, np.ndarray, np.ndarray | None]]:
        """span key -> (item, vision parts (W, 2578), sound parts (W, 250) or None) of every readable item."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        vision = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        sha = hashlib.sha256(graph.read_bytes()).hexdigest()
        sound_graph = self.work / "audio-parts.onnx"
        audio_parts_graph(ROOT / "exports" / "musicnn.onnx", sound_graph)
        sound = ort.InferenceSession(str(sound_graph), options, providers=["CPUExecutionProvider"])
        sound_sha = hashlib.sha256(sound_graph.read_bytes()).hexdigest()
        cache, found, skipped = self.work / "parts_cache", {}, []
        for n, item in enumerate(self.corpus.items):
            try:
                seen = extract(item.path, vision, sha, self.contract, None, cache)
                heard = (extract_audio(item.path, sound, sound_sha, self.contract, SAMPLE_RATE, PATCH_SECONDS, cache)
                         if item.kind == "video" else None)
            except Exception as exc:  # noqa: BLE001 - an unreadable file is left out, with the reason
                skipped.append(f"{item.path.name}: {str(exc)[:80]}")
                continue
            keep = in_span(item, seen.starts, seen.ends)
            if keep.any():
                audio = heard.parts[keep] if heard is not None and len(heard.parts) == len(keep) else None
                found[item.span_key] = (item, seen.parts[keep], audio)
            if n % 200 == 0:
                self.echo(f"  parts: {n} of {len(self.corpus.items)} files")
        self.card["left_out_files"] = skipped
        return found

    # -- heads ---------------------------------------------------------------------------------------------
    def fit_vision(self, rows) -> tuple[Projection, np.ndarray, np.ndarray]:
        pooled = np.concatenate([parts[:, :POOLED] for _, parts, _ in rows])
        projection = Projection.fit(pooled, self.config.dim)
        prior = {tag: i for i, tag in enumerate(tag_names())}
        columns = [projection.dim + prior[t] if t in prior else None for t in TAGS]
        data = examples([(i, features_from_parts(p, projection)) for i, p, _ in rows], TAGS, self.config.head.photo_weight)
        weights, bias = fit_head(data, columns, self.config.head, self.l2)
        return projection, weights, bias

    def fit_sound(self, rows) -> tuple[np.ndarray, np.ndarray]:
        heard = [(i, a) for i, _, a in rows if a is not None and i.kind == "video"]
        if not heard:  # a silent corpus: the sound head keeps musicnn's own tags
            return prior_head(mtt_prior_columns(AUDIO_TAGS), HIDDEN + len(MTT_TAGS), self.config.head)
        data = examples(heard, AUDIO_TAGS, 1.0)
        return fit_head(data, mtt_prior_columns(AUDIO_TAGS), self.config.head)

    def out_of_fold(self, found) -> list[tuple[CorpusItem, np.ndarray, np.ndarray | None]]:
        """Per fit video: (item, vision scores (W, K), sound scores (W, Ka) or None), each from heads
        fitted without its fold."""
        rows = [found[k] for k in found if not found[k][0].in_test_split and found[k][0].split_group != "shared"]
        scored = []
        for fold in range(1, 5):
            train = [r for r in rows if self.corpus.fold(r[0]) != fold]
            held = [r for r in rows if self.corpus.fold(r[0]) == fold and r[0].kind == "video"]
            projection, weights, bias = self.fit_vision(train)
            sound_w, sound_b = self.fit_sound(train)
            for item, parts, audio in held:
                seen = head_scores(features_from_parts(parts, projection), weights, bias)
                heard = head_scores(audio, sound_w, sound_b) if audio is not None else None
                scored.append((item, seen, heard))
            self.echo(f"  out of fold: fold {fold} of 4 done")
        return scored

    def choose_l2(self, found) -> list[tuple[CorpusItem, np.ndarray, np.ndarray | None]]:
        """Per tag, the L2 penalty of `l2_grid` whose out-of-fold videos score best (tagged right
        minus twice tagged wrong, each at the thresholds those scores choose); returns the
        out-of-fold scores of the chosen penalties, tag by tag."""
        runs = {}
        for l2 in self.config.l2_grid:
            self.l2 = [l2] * len(TAGS)
            runs[l2] = self.out_of_fold(found)
        truths = [truth_of(item, TAGS) for item, _, _ in runs[self.config.l2_grid[0]]]
        tables = {l2: video_table(best_windows([s for _, s, _ in scored]), truths, TAGS,
                                  choose_thresholds(best_windows([s for _, s, _ in scored]), truths, TAGS,
                                                    self.config.thresholds))
                  for l2, scored in runs.items()}
        score = lambda l2, tag: tables[l2]["labels"][tag]["tagged"] - 2 * tables[l2]["labels"][tag]["wrong"]
        # ties go to the stronger pull towards ImageNet: a tag no held-out video measures keeps what the backbone knows
        self.l2 = [max(self.config.l2_grid, key=lambda l2: (score(l2, tag), l2)) for tag in TAGS]
        self.card["choices"]["l2"] = {tag: {f"{l2:g}": f"{tables[l2]['labels'][tag]['tagged']} right, "
                                                      f"{tables[l2]['labels'][tag]['wrong']} wrong" for l2 in runs}
                                      | {"chosen": f"{chosen:g}"} for tag, chosen in zip(TAGS, self.l2)}
        mixed = []
        for n, (item, _, heard) in enumerate(runs[self.config.l2_grid[0]]):
            seen = np.stack([runs[l2][n][1][:, k] for k, l2 in enumerate(self.l2)], axis=1)
            mixed.append((item, seen, heard))
        return mixed

    def choose(self, scored) -> tuple[dict, dict, float]:
        """Vision and sound thresholds from out-of-fold scores, then the fusion support that tags most
        held-out videos right for each wrong tag it adds (a wrong tag costs two right ones)."""
        truths = [truth_of(item, TAGS) for item, _, _ in scored]
        rule = self.config.thresholds
        vision = choose_thresholds(best_windows([s for _, s, _ in scored]), truths, TAGS, rule)
        heard = [(i, a) for i, _, a in scored if a is not None]
        sound = (choose_thresholds(best_windows([a for _, a in heard]), [truth_of(i, AUDIO_TAGS) for i, _ in heard],
                                   AUDIO_TAGS, rule) if heard else
                 {tag: rule.ceiling for tag in AUDIO_TAGS})  # no held-out sound measures the sound head: the strictest
        self.card["measured"]["out_of_fold_vision"] = video_table(best_windows([s for _, s, _ in scored]), truths,
                                                                  TAGS, vision)
        results = {}
        for support in FUSION_SUPPORTS:
            table = fused_table(scored, vision, sound, support)
            results[support] = table
        best = max(FUSION_SUPPORTS, key=lambda s: results[s]["instrument_videos_tagged"]
                   - 2 * results[s]["videos_with_a_wrong_tag"])
        self.card["choices"]["fusion_support"] = {str(s): _summary(t) for s, t in results.items()}
        self.card["measured"]["out_of_fold_fused"] = results[best]
        return vision, sound, best


def _summary(table: dict) -> str:
    return (f"{table['instrument_videos_tagged']} of {table['instrument_videos']} instrument videos tagged, "
            f"{table['videos_with_a_wrong_tag']} of {table['videos']} videos with a wrong tag")


def contracts(vision_thresholds: dict, sound_thresholds: dict, support: float) -> tuple[ModelContract, ModelContract]:
    """The two models' contracts as the scan reads them (labels, thresholds, fusion)."""
    video = ModelContract(labels=TAGS, thresholds=vision_thresholds, output="probs", extra={"fusion_support": support})
    raw = {f"{RAW_PREFIX}{t}": 1.01 for t in MTT_TAGS}
    audio = ModelContract(labels=(*AUDIO_TAGS, *raw), thresholds={**sound_thresholds, **raw}, output="probs",
                          kind="audio", sample_rate=SAMPLE_RATE, patch_seconds=PATCH_SECONDS)
    return video, audio


def fused_table(scored, vision: dict, sound: dict, support: float) -> dict:
    """The held-out videos' tags as the scan's deriver gives them, fusing sight and sound."""
    video, audio = contracts(vision, sound, support)
    deriver = Deriver(video, audio, fusion=FusionRules())
    truths, given = [], []
    for item, seen, heard in scored:
        starts = np.arange(len(seen), dtype=float)
        raw = np.zeros((len(seen), len(MTT_TAGS)), np.float32)
        full = np.concatenate([heard, raw], axis=1) if heard is not None else None
        tags = {s.label for s in deriver.segments(starts, starts + 1, seen, full)}
        truths.append(truth_of(item, TAGS))
        given.append([1.0 if t in tags else 0.0 for t in TAGS])
    return video_table(np.array(given), truths, TAGS, dict.fromkeys(TAGS, 0.5))


def run(out_dir: Path, config: DefaultModelConfig, video_root: Path, video_manifest: Path, photo_root: Path | None,
        work: Path, echo=print, shared_clips: bool = True) -> dict:
    """The whole build; returns the card. Writes OUT/default.onnx, default_audio.onnx, default.json."""
    started = time.time()
    corpus = load_corpus(video_root, video_manifest, photo_root, shared_clips)
    fit = corpus.fit()
    echo(f"{len(corpus.items)} files: {sum(i.kind == 'video' for i in fit)} fit videos, "
         f"{sum(i.kind == 'image' for i in fit)} fit photos, {len(corpus.items) - len(fit)} held out")
    build = Build(corpus, config, work, echo)
    graph = build.parts_graph()
    found = build.extract_all(graph)
    scored = build.choose_l2(found)
    vision_thr, sound_thr, support = build.choose(scored)
    rows = [found[k] for k in found if not found[k][0].in_test_split and found[k][0].split_group != "shared"]
    projection, weights, bias = build.fit_vision(rows)
    sound_w, sound_b = build.fit_sound(rows)
    held = [found[k] for k in found if (found[k][0].in_test_split or found[k][0].split_group == "shared")]
    for kind in ("video", "image"):
        subset = [(i, head_scores(features_from_parts(p, projection), weights, bias),
                   head_scores(a, sound_w, sound_b) if a is not None else None) for i, p, a in held if i.kind == kind]
        if subset:
            build.card["measured"][f"test_split_{kind}s_fused" if kind == "video" else "test_split_photos"] = (
                fused_table(subset, vision_thr, sound_thr, support) if kind == "video" else
                video_table(best_windows([s for _, s, _ in subset]), [truth_of(i, TAGS) for i, _, _ in subset],
                            TAGS, vision_thr))
    space = feature_space(graph, projection, config)
    train = {"corpus": {"video_manifest": str(video_manifest.relative_to(ROOT)) if video_manifest.is_relative_to(ROOT)
                        else str(video_manifest), "fit_videos": sum(i.kind == "video" for i in fit),
                        "fit_photos": sum(i.kind == "image" for i in fit)},
             "config": json.loads(json.dumps(dataclasses.asdict(config), default=str)),
             "thresholds_rule": "per tag: the lowest in [0.5, 0.9] reached by at most 0.3% of the out-of-fold "
                                "videos not showing it (best window)",
             "fusion_support": f"{support} (out of fold; see choices)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    append_head(graph, out_dir / "default.onnx", projection, weights, bias,
                vision_metadata(config, vision_thr, support, space, weights, bias, train))
    append_audio_head(ROOT / "exports" / "musicnn.onnx", out_dir / "default_audio.onnx", sound_w, sound_b,
                      audio_metadata(config, sound_thr, sound_w, sound_b, {"corpus": train["corpus"]}))
    card = {"name": "default", "version": config.version, "thresholds": vision_thr, "audio_thresholds": sound_thr,
            "fusion_support": support, "feature_space": space, "left_out": LEFT_OUT, **build.card,
            "bytes": (out_dir / "default.onnx").stat().st_size, "build_seconds": round(time.time() - started)}
    if config.measure_scan_speed:
        from training.model_checks import scan_speed

        card["measured"]["scan_speed"] = scan_speed(out_dir / "default.onnx")
    (out_dir / "default.json").write_text(json.dumps(card, indent=1, default=str) + "\n", encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.build_default", description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=Path("/work/videocorpus"),
                        help="the video corpus folder (python -m training.video_corpus build DIR) [%(default)s]")
    parser.add_argument("--manifest", type=Path, default=ROOT / "training" / "corpus_videos.tsv")
    parser.add_argument("--photos", type=Path, default=SHARED / "corpus", help="photo corpus [%(default)s]")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "default", help="where the models go [%(default)s]")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "v3", help="graphs and cached parts [%(default)s]")
    parser.add_argument("--no-scan-speed", action="store_true", help="skip bench/scan_speed.py (~3 min)")
    parser.add_argument("--ship", action="store_true", help="then the gate against the previous default "
                        "(bench/eval_default.py), and into exports/ when it passes")
    parser.add_argument("--only-ship", action="store_true", help="the gate and shipping only, of a build in --out")
    args = parser.parse_args(argv)
    for what, path in (("--videos", args.videos), ("--manifest", args.manifest)):
        if not path.exists():
            print(f"Error: {what} {path} not found: rebuild the corpus with python -m training.video_corpus build DIR",
                  file=sys.stderr)
            return 2
    config = DefaultModelConfig(measure_scan_speed=not args.no_scan_speed and not args.ship)  # ship measures what ships
    previous = (ROOT / "runs" / "eval" / "v2.onnx", ROOT / "runs" / "eval" / "v2_musicnn.onnx")
    if args.only_ship:
        return 0 if ship(args.out, previous, manifest=args.manifest, videos_root=args.videos) else 1
    try:
        card = run(args.out, config, args.videos, args.manifest, args.photos if args.photos.is_dir() else None,
                   args.work)
    except CorpusError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'default.onnx'} and default_audio.onnx; out of fold: "
          f"{_summary(card['measured']['out_of_fold_fused'])}")
    return 0 if not args.ship or ship(args.out, previous, manifest=args.manifest, videos_root=args.videos) else 1


if __name__ == "__main__":
    sys.exit(main())
