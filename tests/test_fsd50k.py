"""FSD50K metadata reader: hand-written fixtures in FSD50K's layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cilaudio.fsd50k import FSD50K, read_ground_truth, read_vocabulary

VOCAB = (
    "0,Accelerating_and_revving_and_vroom,/m/07q2z82\n"
    "1,Electric_guitar,/m/02sgy\n"
    "2,Guitar,/m/0342h\n"
    "3,Plucked_string_instrument,/m/0fx80y\n"
    "4,Musical_instrument,/m/04szw\n"
    "5,Music,/m/04rlf\n"
    "6,Bark,/m/05tny_\n"
)

DEV = (
    "fname,labels,mids,split\n"
    '64760,"Electric_guitar,Guitar,Plucked_string_instrument,Musical_instrument,Music",'
    '"/m/02sgy,/m/0342h,/m/0fx80y,/m/04szw,/m/04rlf",train\n'
    "16399,Accelerating_and_revving_and_vroom,/m/07q2z82,val\n"
    '999,"Bark,Not_in_vocabulary","/m/05tny_,/m/xxxx",train\n'
)

EVAL = (
    "fname,labels,mids\n"
    "37199,Music,/m/04rlf\n"
    '175151,"Guitar,Music","/m/0342h,/m/04rlf"\n'
)


def _write_dataset(root: Path, dev: str = DEV, eval_: str = EVAL, vocab: str = VOCAB) -> FSD50K:
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    (gt / "vocabulary.csv").write_text(vocab)
    (gt / "dev.csv").write_text(dev)
    (gt / "eval.csv").write_text(eval_)
    return FSD50K(root)


def test_vocabulary_has_no_header(tmp_path: Path) -> None:
    p = tmp_path / "vocabulary.csv"
    p.write_text(VOCAB)
    v = read_vocabulary(p)
    assert list(v.columns) == ["index", "label", "mid"]
    assert len(v) == 7  # the first line is data, not a header
    assert v["index"].tolist() == list(range(7))
    assert pd.api.types.is_integer_dtype(v["index"])
    assert v.loc[0, "label"] == "Accelerating_and_revving_and_vroom"
    assert v.loc[0, "mid"] == "/m/07q2z82"


def test_vocabulary_with_header_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "vocabulary.csv"
    p.write_text("index,label,mid\n" + VOCAB)
    with pytest.raises(ValueError, match=r"vocabulary\.csv, line 1"):
        read_vocabulary(p)


def test_dev_quoted_multilabel_and_ancestors(tmp_path: Path) -> None:
    p = tmp_path / "dev.csv"
    p.write_text(DEV)
    df = read_ground_truth(p, split_column=True)
    assert list(df.columns) == ["fname", "labels", "mids", "split"]
    assert df["fname"].tolist() == ["64760", "16399", "999"]
    assert all(isinstance(f, str) for f in df["fname"])
    first = df.iloc[0]
    assert first["labels"] == (
        "Electric_guitar", "Guitar", "Plucked_string_instrument", "Musical_instrument", "Music"
    )
    assert first["mids"] == ("/m/02sgy", "/m/0342h", "/m/0fx80y", "/m/04szw", "/m/04rlf")
    assert df.iloc[1]["labels"] == ("Accelerating_and_revving_and_vroom",)
    assert df["split"].tolist() == ["train", "val", "train"]
    # A label missing from the vocabulary is kept, not an error.
    assert df.iloc[2]["labels"] == ("Bark", "Not_in_vocabulary")


def test_eval_split_is_eval(tmp_path: Path) -> None:
    p = tmp_path / "eval.csv"
    p.write_text(EVAL)
    df = read_ground_truth(p, split_column=False)
    assert df["split"].tolist() == ["eval", "eval"]
    assert df.iloc[1]["labels"] == ("Guitar", "Music")
    assert df.iloc[1]["mids"] == ("/m/0342h", "/m/04rlf")


def test_crlf_line_endings(tmp_path: Path) -> None:
    p = tmp_path / "eval.csv"
    p.write_bytes(EVAL.replace("\n", "\r\n").encode())
    df = read_ground_truth(p, split_column=False)
    assert df["fname"].tolist() == ["37199", "175151"]
    assert df.iloc[1]["mids"] == ("/m/0342h", "/m/04rlf")


def test_unquoted_multilabel_line_is_reported(tmp_path: Path) -> None:
    bad = DEV + "12345,Guitar,Music,/m/0342h,/m/04rlf,train\n"  # line 5, not quoted
    p = tmp_path / "dev.csv"
    p.write_text(bad)
    with pytest.raises(ValueError, match=r"dev\.csv, line 5") as err:
        read_ground_truth(p, split_column=True)
    assert str(p) in str(err.value)


@pytest.mark.parametrize(
    "line, what",
    [
        ("1,Music,/m/04rlf,test\n", "split"),
        ('2,"Guitar,Music",/m/0342h,train\n', "mids"),
        (",Music,/m/04rlf,train\n", "fname"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, line: str, what: str) -> None:
    p = tmp_path / "dev.csv"
    p.write_text("fname,labels,mids,split\n16399,Music,/m/04rlf,val\n" + line)
    with pytest.raises(ValueError, match=r"dev\.csv, line 3") as err:
        read_ground_truth(p, split_column=True)
    assert what in str(err.value)


def test_wrong_header(tmp_path: Path) -> None:
    p = tmp_path / "eval.csv"
    p.write_text(DEV)  # dev header where eval's is expected
    with pytest.raises(ValueError, match=r"eval\.csv, line 1"):
        read_ground_truth(p, split_column=False)


def test_missing_file_names_path_and_fix(tmp_path: Path) -> None:
    ds = FSD50K(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        ds.load_split("dev")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "FSD50K.ground_truth" / "dev.csv") in msg
    assert "4060432" in msg and "generate" in msg
    with pytest.raises(FileNotFoundError, match="vocabulary.csv"):
        ds.load_vocabulary()


def test_dataset_paths_and_loading(tmp_path: Path) -> None:
    ds = _write_dataset(tmp_path)
    assert ds.ground_truth_dir == tmp_path / "FSD50K.ground_truth"
    assert ds.audio_dir("dev") == tmp_path / "FSD50K.dev_audio"
    assert ds.audio_dir("eval") == tmp_path / "FSD50K.eval_audio"
    assert ds.audio_path("eval", "37199") == tmp_path / "FSD50K.eval_audio" / "37199.wav"
    assert ds.metadata_files() == [
        tmp_path / "FSD50K.ground_truth" / n for n in ("vocabulary.csv", "dev.csv", "eval.csv")
    ]
    assert len(ds.load_vocabulary()) == 7
    assert set(ds.load_split("dev")["split"]) == {"train", "val"}
    assert set(ds.load_split("eval")["split"]) == {"eval"}
    with pytest.raises(ValueError, match="split"):
        ds.load_split("test")


def test_audio_fingerprint_follows_the_files(tmp_path):
    """Same files, same value; a file rewritten in place (same size, a new time), added or
    removed changes it; a missing folder has its own value."""
    import os

    from cilaudio.datasets import audio_fingerprint

    folder = tmp_path / "FSD50K.dev_audio"
    folder.mkdir()
    for name in ("1.wav", "2.wav"):
        (folder / name).write_bytes(b"RIFF" + bytes(40))
    first = audio_fingerprint(folder)
    assert audio_fingerprint(folder) == first and first.startswith("2 files")
    st = (folder / "1.wav").stat()
    os.utime(folder / "1.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = audio_fingerprint(folder)
    assert touched != first
    (folder / "3.wav").write_bytes(b"x")
    added = audio_fingerprint(folder)
    assert added not in (first, touched) and added.startswith("3 files")
    (folder / "3.wav").unlink()
    assert audio_fingerprint(folder) == touched
    (folder / "sub").mkdir()  # folders are not clips
    assert audio_fingerprint(folder) == touched
    assert audio_fingerprint(tmp_path / "absent") == "missing"
