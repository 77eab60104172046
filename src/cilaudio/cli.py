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
    reported class, the ``--top`` best (0: all) with score >= ``--threshold``.

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
from typing import TYPE_CHECKING, Sequence, TextIO

if TYPE_CHECKING:  # heavy imports only where a command needs them
    import numpy as np

    from .features import FeatureSettings
    from .model import CNN14
    from .phases import PhaseSplit

__all__ = ["main", "build_parser", "tag_clips", "feature_settings_of"]

log = logging.getLogger(__name__)

CLASSES_HEADER = ["index", "name", "phase"]


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
    tag.add_argument("--top", type=int, default=5, help="classes reported per clip or second (0: all; default 5)")
    tag.add_argument("--threshold", type=float, default=None,
                     help="report only classes with a score at least this (default: no threshold)")
    tag.add_argument("--per-second", action="store_true",
                     help="score every second of audio separately (1-s excerpts) instead of whole clips")
    tag.add_argument("--features", type=Path, default=None,
                     help="features HDF5 the model was trained on, to read the feature settings from "
                          "when the checkpoint does not store them (key 'features')")
    tag.add_argument("--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda")
    tag.add_argument("--batch-size", type=int, default=32, help="excerpts per forward pass (default 32)")
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
              batch_size: int = 32, device: str | None = None
              ) -> list[tuple[Path, list[tuple[float, float]], "np.ndarray"]]:
    """Sigmoid scores of each clip: ``[(path, [(start, end), ...], scores (rows, classes)), ...]``.

    One row per clip (max over its excerpts) or, with ``per_second``, one row per second.
    """
    import numpy as np
    import torch

    from .features import LogMel, cut_excerpts, load_audio

    # (the feature settings' sample rate is the rate the model was trained at)

    device = torch.device(device or "cpu")
    cut = settings
    if per_second:
        cut = dataclasses.replace(settings, excerpt_seconds=1.0, hop_seconds=1.0,
                                  min_last_seconds=min(settings.min_last_seconds, 1.0))
    logmel = LogMel(cut).to(device)
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for path in clips:
            wave = load_audio(path, settings.sample_rate)  # (samples,)
            duration = len(wave) / settings.sample_rate
            pieces, starts = cut_excerpts(wave, cut)  # (n, excerpt_samples)
            scores = []
            for i in range(0, len(pieces), batch_size):
                x = logmel(torch.from_numpy(pieces[i : i + batch_size]).to(device))  # (b, frames, mels)
                try:
                    logits, _ = model(x)  # (b, classes)
                except ValueError as err:
                    raise ValueError(f"{path}: {err} (excerpts of {cut.excerpt_seconds} s are too short "
                                     "for this model's features)") from None
                scores.append(torch.sigmoid(logits).float().cpu().numpy())
            scores = np.concatenate(scores)  # (n, classes)
            if per_second:
                spans = [(s, min(s + cut.excerpt_seconds, duration)) for s in starts]
            else:
                spans, scores = [(0.0, duration)], scores.max(axis=0, keepdims=True)
            out.append((path, spans, scores))
    return out


def _run_tag(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    import numpy as np
    import torch

    from .checkpoint import load_checkpoint

    stdout = stdout or sys.stdout
    if args.top < 0:
        raise ValueError(f"--top must be 0 (all) or more, got {args.top}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    for path in [args.checkpoint, *args.clips]:
        if not path.is_file():
            raise FileNotFoundError(f"{'checkpoint' if path == args.checkpoint else 'audio file'} {path} "
                                    "does not exist")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, state = load_checkpoint(args.checkpoint, device=device)
    classes = list(state["classes"])
    if len(classes) != model.n_classes:
        raise ValueError(f"{args.checkpoint}: {len(classes)} class names for {model.n_classes} outputs")
    settings = feature_settings_of(state, features=args.features, source=str(args.checkpoint))
    if settings.n_mels != model.settings.n_mels:
        raise ValueError(f"feature settings have {settings.n_mels} mel bands, the model expects "
                         f"{model.settings.n_mels}")
    results = tag_clips(model, args.clips, settings, per_second=args.per_second,
                        batch_size=args.batch_size, device=device)
    top = args.top or len(classes)
    print("file\tstart\tend\trank\tclass\tscore", file=stdout)
    for path, spans, scores in results:
        for (start, end), row in zip(spans, scores):
            order = np.argsort(-row, kind="stable")[:top]
            rank = 0
            for j in order:
                if args.threshold is not None and row[j] < args.threshold:
                    break
                rank += 1
                print(f"{path}\t{start:.3f}\t{end:.3f}\t{rank}\t{classes[j]}\t{row[j]:.4f}", file=stdout)
    return 0


# -- import-lists -----------------------------------------------------------------------------


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_split(path: Path, phases: Sequence[int] | None) -> "PhaseSplit":
    from . import lists as L
    from .phases import PhaseSplit

    if not path.is_file():
        raise FileNotFoundError(f"class list {path} does not exist")
    first = path.read_text(encoding="utf-8").splitlines()[:1]
    if first and first[0].rstrip("\r\n").split("\t") == CLASSES_HEADER:
        split = L.read_classes(path)
        if phases is not None and list(phases) != [len(g) for g in split.groups]:
            raise ValueError(f"--phases {list(phases)} disagrees with {path}, whose phases have "
                             f"{[len(g) for g in split.groups]} classes")
        return split
    return PhaseSplit.from_sizes(_read_names(path), list(phases) if phases else [30, 5, 5, 5, 5])


def _run_import(args: argparse.Namespace) -> int:
    from .paper_lists import import_paper_lists

    split = _read_split(args.classes, args.phases)
    order = _read_names(args.vector_order) if args.vector_order else None
    out = import_paper_lists(args.papers_folder, args.out_folder, split, classes=order)
    print(f"wrote {len(out['train'])} training and {len(out['test'])} test lists to {args.out_folder}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
