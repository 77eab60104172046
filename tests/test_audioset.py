"""AudioSet strong-label reader: hand-written fixtures in the real files' layout."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cilaudio import lists as L
from cilaudio.audioset import AudioSet, parse_segment_id, read_label_names, read_strong_labels
from cilaudio.phases import ClassSplit

NAMES = (
    "/m/09x0r\tSpeech\n"
    "/m/05zppz\tMale speech, man speaking\n"
    "/m/02zsn\tFemale speech, woman speaking\n"
    "/m/0bt9lr\tDog\n"
    "/m/07q6cd_\tSqueak\n"
    "/m/04rlf\tMusic\n"
)

HEADER = "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"

TRAIN = HEADER + (
    # overlapping events of two classes, one class twice
    "s9d-2nhuJCQ_30000\t0.000\t4.500\t/m/05zppz\n"
    "s9d-2nhuJCQ_30000\t2.250\t6.000\t/m/0bt9lr\n"
    "s9d-2nhuJCQ_30000\t5.000\t9.000\t/m/05zppz\n"
    # id starting with '-' and containing '_'
    "-ql66_pp0iq_4_40000\t1.0\t2.0\t/m/02zsn\n"
    "-ql66_pp0iq_4_40000\t0.5\t9.5\t/m/09x0r\n"
    # only a non-target class (Squeak) and a mid missing from the table
    "abcdefghijk_0\t0\t10\t/m/07q6cd_\n"
    "abcdefghijk_0\t3\t4\t/m/unknown1\n"
    "\n"  # a blank line is ignored
    "Zz_9_Zz_123000\t0.0\t1.0\t/m/04rlf\n"
)

EVAL = HEADER + (
    "-0EVAL_clip_10000\t0.0\t10.0\t/m/04rlf\n"
    "evalclip001_20000\t0.1\t0.2\t/m/0bt9lr\n"
    "evalclip001_20000\t0.1\t0.2\t/m/unknown2\n"
)


def _dataset(tmp_path: Path, *, train: str = TRAIN, eval_: str = EVAL, names: str = NAMES,
             pattern: str = "Y{id}_{start_ms}.wav") -> AudioSet:
    (tmp_path / "audioset_train_strong.tsv").write_text(train, encoding="utf-8")
    (tmp_path / "audioset_eval_strong.tsv").write_text(eval_, encoding="utf-8")
    (tmp_path / "mid_to_display_name.tsv").write_text(names, encoding="utf-8")
    return AudioSet.from_root(tmp_path, dev_audio="dev_audio", eval_audio="eval_audio", file_pattern=pattern)


def test_parse_segment_id_splits_on_last_underscore() -> None:
    assert parse_segment_id("s9d-2nhuJCQ_30000") == ("s9d-2nhuJCQ", 30000)
    assert parse_segment_id("ql66pp0iq_4_40000") == ("ql66pp0iq_4", 40000)
    assert parse_segment_id("-abc_def_0") == ("-abc_def", 0)
    for bad in ("nounderscore", "_30000", "abc_", "abc_12x"):
        with pytest.raises(ValueError, match="segment id"):
            parse_segment_id(bad)


def test_vocabulary_no_header_and_commas(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    v = ds.load_vocabulary()
    assert list(v.columns) == ["index", "label", "mid"]
    assert len(v) == 6  # the first line is data
    assert v["label"].tolist()[1] == "Male speech, man speaking"
    assert v["mid"].tolist()[1] == "/m/05zppz"
    assert v["index"].tolist() == list(range(6))


def test_vocabulary_errors(tmp_path: Path) -> None:
    p = tmp_path / "names.tsv"
    p.write_text("/m/a\tA\n/m/b B\n")
    with pytest.raises(ValueError, match=r"names\.tsv, line 2"):
        read_label_names(p)
    p.write_text("/m/a\tA\n/m/a\tB\n")
    with pytest.raises(ValueError, match=r"line 2: mid /m/a already given on line 1"):
        read_label_names(p)


def test_dev_clip_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = _dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cilaudio.audioset"):
        dev = ds.load_split("dev")
    assert list(dev.columns) == ["fname", "labels", "mids", "split"]
    assert dev["fname"].tolist() == ["Ys9d-2nhuJCQ_30000", "Y-ql66_pp0iq_4_40000", "Yabcdefghijk_0",
                                     "YZz_9_Zz_123000"]
    assert set(dev["split"]) == {"train"}
    rows = dict(zip(dev["fname"], zip(dev["labels"], dev["mids"])))
    # overlapping events; a class with two events appears once; label-table order
    assert rows["Ys9d-2nhuJCQ_30000"] == (("Male speech, man speaking", "Dog"), ("/m/05zppz", "/m/0bt9lr"))
    assert rows["Y-ql66_pp0iq_4_40000"] == (("Speech", "Female speech, woman speaking"),
                                           ("/m/09x0r", "/m/02zsn"))
    # an unknown mid is kept as the mid itself, after the known ones, with one warning
    assert rows["Yabcdefghijk_0"] == (("Squeak", "/m/unknown1"), ("/m/07q6cd_", "/m/unknown1"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "1 event(s) with 1 mid(s)" in warnings[0].getMessage()
    assert "/m/unknown1" in warnings[0].getMessage()


def test_eval_split_and_audio_path_round_trip(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    ev = ds.load_split("eval")
    assert ev["fname"].tolist() == ["Y-0EVAL_clip_10000", "Yevalclip001_20000"]
    assert set(ev["split"]) == {"eval"}
    assert ev.iloc[1]["labels"] == ("Dog", "/m/unknown2")
    assert ds.audio_path("eval", "Y-0EVAL_clip_10000") == tmp_path / "eval_audio" / "Y-0EVAL_clip_10000.wav"
    dev = ds.load_split("dev")
    assert ds.audio_path("dev", dev["fname"].iloc[1]) == tmp_path / "dev_audio" / "Y-ql66_pp0iq_4_40000.wav"
    assert ds.metadata_files() == [tmp_path / "mid_to_display_name.tsv", tmp_path / "audioset_train_strong.tsv",
                                   tmp_path / "audioset_eval_strong.tsv"]


def test_other_file_patterns(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, pattern="Y{id}_{start_s:.3f}_{end_s:.3f}.flac")
    ev = ds.load_split("eval")
    assert ev["fname"].tolist() == ["Y-0EVAL_clip_10.000_20.000", "Yevalclip001_20.000_30.000"]
    assert ds.audio_path("eval", ev["fname"][0]).name == "Y-0EVAL_clip_10.000_20.000.flac"
    ds = _dataset(tmp_path, pattern="{segment_id}")
    assert ds.load_split("eval")["fname"].tolist() == ["-0EVAL_clip_10000", "evalclip001_20000"]
    assert ds.audio_path("eval", "evalclip001_20000").name == "evalclip001_20000"
    with pytest.raises(ValueError, match="unknown field"):
        _dataset(tmp_path, pattern="Y{vid}.wav")
    with pytest.raises(ValueError, match="must contain"):
        _dataset(tmp_path, pattern="{start_ms}.wav")
    with pytest.raises(ValueError, match="same name"):
        _dataset(tmp_path, pattern="{id}.wav",
                 eval_=HEADER + "abc_0\t0\t1\t/m/04rlf\nabc_10000\t0\t1\t/m/04rlf\n").load_split("eval")


def test_only_with_audio(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    (tmp_path / "eval_audio").mkdir()
    (tmp_path / "eval_audio" / "Yevalclip001_20000.wav").write_bytes(b"")
    ev = ds.load_split("eval", only_with_audio=True)
    assert ev["fname"].tolist() == ["Yevalclip001_20000"]


def test_header_is_required_and_skipped(tmp_path: Path) -> None:
    p = tmp_path / "strong.tsv"
    p.write_text(HEADER + "abc_0\t0\t1\t/m/x\n")
    events = read_strong_labels(p)
    assert events["segment_id"].tolist() == ["abc_0"]  # the header is not an event
    p.write_text("abc_0\t0\t1\t/m/x\n")
    with pytest.raises(ValueError, match=r"strong\.tsv, line 1: expected the header"):
        read_strong_labels(p)
    p.write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_strong_labels(p)


@pytest.mark.parametrize(
    "row, what",
    [
        ("abc_0\t0\t1\n", "expected 4 tab-separated fields"),
        ("abc_0 0 1 /m/x\n", "expected 4 tab-separated fields"),
        ("abc_0\tzero\t1\t/m/x\n", "not numbers"),
        ("abc_0\t2\t1\t/m/x\n", "start <= end"),
        ("abc0\t0\t1\t/m/x\n", "segment id"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path: Path, row: str, what: str) -> None:
    ds = _dataset(tmp_path, train=HEADER + "good_0\t0\t1\t/m/04rlf\n" + row)
    with pytest.raises(ValueError, match=rf"audioset_train_strong\.tsv, line 3: .*{what}"):
        ds.load_split("dev")


def test_missing_file_names_path_source_and_key(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    (tmp_path / "audioset_eval_strong.tsv").unlink()
    with pytest.raises(FileNotFoundError) as err:
        ds.load_split("eval")
    msg = str(err.value)
    assert str(tmp_path / "audioset_eval_strong.tsv") in msg
    assert "research.google.com/audioset/download_strong.html" in msg
    assert "eval_labels" in msg
    (tmp_path / "mid_to_display_name.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="label_names"):
        ds.load_vocabulary()


def test_bad_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'dev' or 'eval'"):
        _dataset(tmp_path).load_split("train")


def test_clip_table_feeds_the_list_generator(tmp_path: Path) -> None:
    """Segments without a target class drop out of the lists; display names keep their commas."""
    ds = _dataset(tmp_path)
    class_split = ClassSplit.from_sizes(["Male speech, man speaking", "Speech", "Dog", "Music"], [2, 1, 1])
    train = L.training_lists(ds.load_split("dev"), class_split, assignment="latest")
    names = [set(t["fname"]) for t in train]
    # Ys9d...: Male speech (phase 0) + Dog (phase 1) -> latest = phase 1
    # Y-ql66...: Speech (phase 0); Yabc...: only Squeak, no target class -> nowhere
    # YZz...: Music (phase 2)
    assert names == [{"Y-ql66_pp0iq_4_40000"}, {"Ys9d-2nhuJCQ_30000"}, {"YZz_9_Zz_123000"}]
    row = train[1].iloc[0]
    assert L.split_labels(row["labels"]) == ["Dog"]
    assert L.split_labels(row["all_labels"]) == ["Male speech, man speaking", "Dog"]
    test = L.test_lists(ds.load_split("dev"), class_split)
    assert [t["fname"].tolist() for t in test] == [
        ["Ys9d-2nhuJCQ_30000", "Y-ql66_pp0iq_4_40000"],
        ["Ys9d-2nhuJCQ_30000", "Y-ql66_pp0iq_4_40000"],
        ["Ys9d-2nhuJCQ_30000", "Y-ql66_pp0iq_4_40000", "YZz_9_Zz_123000"],
    ]
    assert L.split_labels(test[0].iloc[0]["labels"]) == ["Male speech, man speaking"]
