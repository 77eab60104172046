"""The ``cilaudio`` command line.

``cilaudio tag MODEL.pt CLIP.wav [CLIP ...] [--top K] [--per-second] [--threshold T]``
    Tag audio files with a phase checkpoint. Each clip is read, downmixed, resampled and cut
    into excerpts exactly as the features the model was trained on (settings from the
    checkpoint's ``"features"`` entry; a checkpoint without it needs ``--features`` pointing at
    the features HDF5 of its training run, e.g. ``results/<dataset>/features/dev.h5``). A
    clip's score for a class is the highest sigmoid score over its excerpts; with
    ``--per-second`` every second of audio (1-s excerpts every second; a last partial second
    shorter than the features' ``min_last_seconds`` is dropped unless it is the only one) is
    scored on its own. Prints TSV on stdout: ``file start end rank class score``, one row per
    reported class, the ``--top`` best (0: all) with score >= ``--threshold`` (in (0, 1)); a clip
    (or second) with no class at the threshold gets one row of rank 0 holding its best class and
    score, so every clip shows. Warnings on stderr name clips that are silent (peak below 1e-4),
    shorter than one excerpt (zero-padded) or stereo that cancels in the downmix (antiphase);
    they are still tagged. A clip that cannot be read (missing, undecodable, empty, NaN or
    infinite samples) is reported on stderr and the others are tagged; the exit status is then 1.

``cilaudio import-lists PAPERS_FOLDER OUT_FOLDER --classes CLASSES``
    Convert the papers' list files (``train_phase_0.txt``, ``test_phase_0.txt``, ...,
    ``test_phase_0_1_2_3_4.txt``) into this project's lists folder (:mod:`cilaudio.paper_lists`).
    ``CLASSES`` is a ``classes.tsv`` written by the workflow, or a plain list of class names
    (one per line) cut into phases by ``--phases``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TextIO

if TYPE_CHECKING:  # heavy imports only where a command needs them
    import numpy as np

    from .features import FeatureSettings
    from .model import CNN14
    from .phases import ClassSplit

__all__ = ["main", "build_parser", "tag_clips", "feature_settings_of"]

log = logging.getLogger(__name__)

CLASSES_HEADER = ["index", "name", "phase"]


def _probability(text: str) -> float:
    """``--threshold``: scores are sigmoid probabilities, so only (0, 1) selects anything."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:  # written this way round to refuse nan too
        raise argparse.ArgumentTypeError(
            f"must be in (0, 1) (scores are sigmoid probabilities), got {text}")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cilaudio",
        description="Class-incremental multi-label audio classification: tools around the workflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tag = sub.add_parser(
        "tag", help="tag audio files with a phase checkpoint",
        description="Print the top classes of each clip (or each second) with their sigmoid scores, "
                    "as TSV: file, start, end, rank, class, score.",
    )
    tag.add_argument("checkpoint", type=Path, help="phase checkpoint (phase<k>.pt)")
    tag.add_argument("clips", type=Path, nargs="+", help="audio files (any format soundfile reads)")
    tag.add_argument("--top", type=_at_least(0), default=5,
                     help="classes reported per clip or second (0: all; default 5)")
    tag.add_argument("--threshold", type=_probability, default=None,
                     help="report only classes with a score at least this, in (0, 1); a clip or second "
                          "with none gets one row of rank 0: its best class and score (default: no "
                          "threshold)")
    tag.add_argument("--per-second", action="store_true",
                     help="score every second of audio separately (1-s excerpts) instead of whole clips")
    tag.add_argument("--features", type=Path, default=None,
                     help="features HDF5 the model was trained on, to read the feature settings from "
                          "when the checkpoint does not store them (key 'features')")
    tag.add_argument("--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda")
    tag.add_argument("--batch-size", type=_at_least(1), default=32, help="excerpts per forward pass (default 32)")
    tag.set_defaults(run=_run_tag)

    imp = sub.add_parser(
        "import-lists", help="convert the papers' list files into this project's lists",
        description="Read train_phase_<k>.txt / test_phase_0_..._<k>.txt and write train_phase<k>.tsv, "
                    "test_phase<k>.tsv, classes.tsv, clips_dev.tsv and clips_eval.tsv.",
    )
    imp.add_argument("papers_folder", type=Path, help="folder with the papers' list files")
    imp.add_argument("out_folder", type=Path, help="where to write our lists")
    imp.add_argument("--classes", type=Path, required=True,
                     help="classes.tsv (index, name, phase) or a text file with one class name per line")
    imp.add_argument("--phases", type=int, nargs="+", default=None,
                     help="phase sizes for a plain class list (default 30 5 5 5 5)")
    imp.add_argument("--vector-order", type=Path, default=None,
                     help="text file with the class order of the papers' label vectors, one name per "
                          "line (default: the order of --classes)")
    imp.set_defaults(run=_run_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cilaudio`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"cilaudio {args.command}: error: {err}", file=sys.stderr)
        return 1


# -- tag --------------------------------------------------------------------------------------


def feature_settings_of(state: dict, *, features: Path | None = None,
                        source: str = "checkpoint") -> "FeatureSettings":
    """The FeatureSettings of a checkpoint: its ``"features"`` entry, else ``features``' attributes.

    Raises ValueError when neither is there, or when both are and they differ.
    """
    from .features import FeatureSettings, read_settings

    def build(raw, where: str) -> FeatureSettings:
        if isinstance(raw, FeatureSettings):
            return raw
        names = {f.name for f in dataclasses.fields(FeatureSettings)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"{where}: unknown feature settings {sorted(unknown)}")
        return FeatureSettings(**raw)

    stored = state.get("features")
    given = None
    if features is not None:
        if not Path(features).is_file():
            raise FileNotFoundError(f"features file {features} does not exist")
        given = build(read_settings(features), str(features))
    if stored is not None:
        ours = build(stored, source)
        if given is not None and given != ours:
            diff = {k: (getattr(ours, k), getattr(given, k)) for k in dataclasses.asdict(ours)
                    if getattr(ours, k) != getattr(given, k)}
            raise ValueError(
                f"feature settings of {source} and {features} differ (checkpoint, file): {diff}; "
                "leave out --features"
            )
        return ours
    if given is None:
        raise ValueError(
            f"{source} does not store its feature settings (key 'features'): pass --features with the "
            "features HDF5 it was trained on (results/<dataset>/features/dev.h5)"
        )
    return given


def tag_clips(model: "CNN14", clips: Sequence[Path], settings: "FeatureSettings", *, per_second: bool = False,
              batch_size: int = 32, device: str | None = None,
              on_bad: Callable[[Path, str], None] | None = None,
              warn: Callable[[str], None] | None = None,
              ) -> list[tuple[Path, list[tuple[float, float]], "np.ndarray"]]:
    """Sigmoid scores of each clip: ``[(path, [(start, end), ...], scores (rows, classes)), ...]``.

    One row per clip (max over its excerpts) or, with ``per_second``, one row per second.
    A clip that cannot be read (missing, undecodable, empty, NaN or infinite samples, a
    checkpoint given as a clip) raises, or, with ``on_bad``, is left out and passed to it with
    the reason, so one bad file does not cost the others' tags. Doubts about a clip that is
    tagged (:func:`audio_warnings`) go to ``warn`` (default: the log).
    """
    import torch

    from .features import LogMel, cut_excerpts, read_audio, to_mono

    device = torch.device(device or "cpu")
    cut = _cut_settings(settings, per_second)
    logmel = LogMel(cut).to(device)
    model = model.to(device).eval()
    warn = warn or log.warning
    out = []
    with torch.inference_mode():
        for path in clips:
            try:
                data, rate = read_audio(path)  # (samples, channels)
            except (FileNotFoundError, ValueError) as err:
                if on_bad is None:
                    raise type(err)(_clip_error(path, err)) from err
                on_bad(path, _clip_error(path, err))
                continue
            for message in audio_warnings(path, data, rate, cut.excerpt_seconds):
                warn(message)
            # (the feature settings' sample rate is the rate the model was trained at)
            wave = to_mono(data, rate, settings.sample_rate)  # (samples,)
            duration = len(wave) / settings.sample_rate
            pieces, starts = cut_excerpts(wave, cut)  # (n, excerpt_samples)
            scores = _score_excerpts(model, logmel, pieces, batch_size, device, path, cut)
            if per_second:
                spans = [(s, min(s + cut.excerpt_seconds, duration)) for s in starts]
            else:
                spans, scores = [(0.0, duration)], scores.max(axis=0, keepdims=True)
            out.append((path, spans, scores))
    return out


def _cut_settings(settings: "FeatureSettings", per_second: bool) -> "FeatureSettings":
    """The excerpts to score: the training features', or 1-s ones every second."""
    if not per_second:
        return settings
    return dataclasses.replace(settings, excerpt_seconds=1.0, hop_seconds=1.0,
                               min_last_seconds=min(settings.min_last_seconds, 1.0))


def _score_excerpts(model: "CNN14", logmel, pieces: "np.ndarray", batch_size: int, device,
                    path: Path, cut: "FeatureSettings") -> "np.ndarray":
    """Sigmoid scores (n, classes) of excerpts (n, samples), ``batch_size`` at a time."""
    import numpy as np
    import torch

    scores = []
    for i in range(0, len(pieces), batch_size):
        x = logmel(torch.from_numpy(pieces[i : i + batch_size]).to(device))  # (b, frames, mels)
        try:
            logits, _ = model(x)  # (b, classes)
        except ValueError as err:
            raise ValueError(f"{path}: {err} (excerpts of {cut.excerpt_seconds} s are too short "
                             "for this model's features)") from None
        scores.append(torch.sigmoid(logits).float().cpu().numpy())
    return np.concatenate(scores)


# Peak below which a clip counts as silent: -80 dBFS, about three steps of 16-bit PCM
# (1/32768 = 3.1e-5), so only digital silence, dither or a few bits of noise fall under it,
# never merely quiet sound. Scores of such a clip say nothing about its content.
SILENCE_PEAK = 1e-4
# Stereo whose mean downmix has an RMS below this share of its channels' RMS (-40 dB) has
# cancelled in the downmix (channels in antiphase): the model hears (almost) nothing of it.
CANCEL_RATIO = 0.01


def audio_warnings(path: Path, data: "np.ndarray", rate: int, excerpt_seconds: float) -> list[str]:
    """Reasons to doubt the tags of a clip decoded as ``data`` (samples, channels) at ``rate``:
    silent (peak below SILENCE_PEAK), stereo that cancels in the mean downmix (downmix RMS
    below CANCEL_RATIO of the channels'), shorter than one ``excerpt_seconds`` excerpt
    (zero-padded)."""
    import numpy as np

    def rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))

    messages = []
    peak = float(np.abs(data).max())
    if peak < SILENCE_PEAK:
        messages.append(f"{path} is silent (peak {peak:.1e}, below {SILENCE_PEAK:g}): its scores say "
                        "nothing about its content")
    elif data.shape[1] > 1 and rms(data.mean(axis=1)) < CANCEL_RATIO * rms(data):
        messages.append(f"{path}: its {data.shape[1]} channels cancel in the mean downmix the model "
                        f"hears (RMS {rms(data.mean(axis=1)):.1e} against {rms(data):.1e} for the "
                        "channels: in antiphase?): tag one channel on its own, e.g. after "
                        "`sox in.wav out.wav remix 1`")
    seconds = len(data) / rate
    if seconds < excerpt_seconds:
        messages.append(f"{path} is {seconds:.3f} s long, shorter than the model's {excerpt_seconds} s "
                        f"excerpts: it is zero-padded to {excerpt_seconds} s, so its scores may be lower")
    return messages


TAG_ORDER = "the order is CHECKPOINT CLIP [CLIP ...]"


def _clip_error(path: Path, err: Exception) -> str:
    """Why a clip cannot be tagged: ``err``'s message, or that it is a checkpoint given as a clip."""
    if _is_checkpoint(path):
        return f"{path} is a checkpoint, not an audio file: {TAG_ORDER}"
    return str(err)


def _is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a file torch.save wrote (a zip archive holding ``data.pkl``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _is_audio(path: Path) -> bool:
    """Whether soundfile can open ``path``."""
    import soundfile as sf

    try:
        sf.info(str(path))
    except Exception:  # soundfile raises LibsndfileError / RuntimeError
        return False
    return True


def _load_tag_model(path: Path, device: str) -> tuple["CNN14", dict]:
    """The checkpoint given as ``cilaudio tag``'s first argument. Errors say when it is no
    checkpoint at all (e.g. the arguments were swapped): the loader's own message tells the
    workflow's user to delete and remake the file, wrong advice for someone's audio file."""
    from .checkpoint import load_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    wrong = f"the first argument must be a phase checkpoint (phase<k>.pt); {path} is not one"
    if _is_audio(path):
        raise ValueError(f"{wrong}, it is an audio file: {TAG_ORDER}")
    try:
        return load_checkpoint(path, device=device)
    except ValueError as err:
        if _is_checkpoint(path):
            raise  # a torch file this project cannot load: the loader's message and fix hold
        raise ValueError(f"{wrong} ({err.__cause__ or err}): {TAG_ORDER}") from err


def _tag_rows(path: Path, spans: list[tuple[float, float]], scores: "np.ndarray", classes: Sequence[str],
              top: int, threshold: float | None) -> list[str]:
    """TSV rows of one clip: per span its ``top`` best classes with score >= ``threshold``, or,
    when none reaches it, one row of rank 0 with the best class and its score, so every clip
    (and second) shows in the output."""
    import numpy as np

    rows = []
    for (start, end), row in zip(spans, scores):
        order = np.argsort(-row, kind="stable")
        kept = [j for j in order[:top] if threshold is None or row[j] >= threshold]
        ranked = list(enumerate(kept, start=1)) or [(0, order[0])]
        rows += [f"{path}\t{start:.3f}\t{end:.3f}\t{rank}\t{classes[j]}\t{row[j]:.4f}" for rank, j in ranked]
    return rows


def _say(kind: str, message: str) -> None:
    print(f"cilaudio tag: {kind}: {message}", file=sys.stderr)


def _run_tag(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    import torch

    stdout = stdout or sys.stdout
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, state = _load_tag_model(args.checkpoint, device)
    classes = list(state["classes"])
    if len(classes) != model.n_classes:
        raise ValueError(f"{args.checkpoint}: {len(classes)} class names for {model.n_classes} outputs")
    settings = feature_settings_of(state, features=args.features, source=str(args.checkpoint))
    if settings.n_mels != model.settings.n_mels:
        raise ValueError(f"feature settings have {settings.n_mels} mel bands, the model expects "
                         f"{model.settings.n_mels}")
    bad: list[Path] = []

    def on_bad(path: Path, reason: str) -> None:
        bad.append(path)
        _say("error", reason)

    results = tag_clips(model, args.clips, settings, per_second=args.per_second, batch_size=args.batch_size,
                        device=device, on_bad=on_bad, warn=lambda message: _say("warning", message))
    from .evaluate import check_scores

    for path, _, scores in results:  # before any row is printed: no `nan` row reaches the output
        check_scores(scores, checkpoint=args.checkpoint, what=f"excerpts of {path}")
    print("file\tstart\tend\trank\tclass\tscore", file=stdout)
    for path, spans, scores in results:
        for line in _tag_rows(path, spans, scores, classes, args.top or len(classes), args.threshold):
            print(line, file=stdout)
    if bad:
        _say("error", f"{len(bad)} of {len(args.clips)} files could not be tagged (above); "
                      "the rows are those of the others")
    return 1 if bad else 0


# -- import-lists -----------------------------------------------------------------------------


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_class_split(path: Path, phases: Sequence[int] | None) -> "ClassSplit":
    from . import lists as L
    from .phases import ClassSplit

    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist")
    first = path.read_text(encoding="utf-8").splitlines()[:1]
    if first and first[0].rstrip("\r\n").split("\t") == CLASSES_HEADER:
        class_split = L.read_classes(path)
        if phases is not None and list(phases) != [len(g) for g in class_split.groups]:
            raise ValueError(f"--phases {list(phases)} disagrees with {path}, whose phases have "
                             f"{[len(g) for g in class_split.groups]} classes")
        return class_split
    return ClassSplit.from_sizes(_read_names(path), list(phases) if phases else [30, 5, 5, 5, 5])


def _run_import(args: argparse.Namespace) -> int:
    from .paper_lists import import_paper_lists

    class_split = _read_class_split(args.classes, args.phases)
    order = _read_names(args.vector_order) if args.vector_order else None
    out = import_paper_lists(args.papers_folder, args.out_folder, class_split, classes=order)
    print(f"wrote {len(out['train'])} training and {len(out['test'])} test lists to {args.out_folder}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
