"""Import of the papers' list files: records written the way numpy prints them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cilaudio import lists as L
from cilaudio.paper_lists import clip_stem, import_paper_lists, parse_paper_list, to_list_frame
from cilaudio.phases import ClassSplit

SIZES = [30, 5, 5, 5, 5]
CLASSES = [f"class {i:02d}, with comma" for i in range(50)]
CLASS_SPLIT = ClassSplit.from_sizes(CLASSES, SIZES)


def _record(path: str, vector: np.ndarray, npy: bool = False) -> str:
    # numpy's own printing, as the reference code writes it: wrapped over several lines
    text = f"{path}_{np.asarray(vector, dtype=float)}"
    return text + (".npy" if npy else "")


def _write(path: Path, records: list[tuple[str, np.ndarray]], *, npy: bool = False) -> Path:
    path.write_text("\n".join(_record(p, v, npy) for p, v in records) + "\n", encoding="utf-8")
    return path


def _vectors(rng: np.random.Generator, n: int, size: int) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        v = (rng.random(size) < 0.2).astype(float)
        v[rng.integers(size)] = 1.0
        out.append(v)
    return out


def test_wrapped_vectors_prefixes_npy_and_last_record(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = _vectors(rng, 3, 30)
    paths = ["/data/Audioset/train/Yb0RFKhbpFJA_30000.wav", "relative/dir/Y-ab_c_d_10000.wav",
             "C:\\audio\\Yzzz_0.wav"]
    text_path = _write(tmp_path / "train_phase_0.txt", list(zip(paths, vecs)), npy=True)
    text = text_path.read_text()
    assert text.count("\n") > 3  # numpy wrapped the 30-entry vectors
    assert text.rstrip().endswith("].npy")
    got = parse_paper_list(text_path)
    assert len(got) == 3  # the last record is kept
    assert [p for p, _ in got] == paths
    for (_, v), want in zip(got, vecs):
        np.testing.assert_array_equal(v, want)
    assert [clip_stem(p) for p, _ in got] == ["Yb0RFKhbpFJA_30000", "Y-ab_c_d_10000", "Yzzz_0"]


def test_docs_example_and_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text(
        "/data/Audioset/train/Yb0RFKhbpFJA_30000.wav_[0. 1. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 1. 0. 0. "
        "0. 0. 0. 0. 0. 0. 0. 0.\n 0. 0. 0. 0. 0. 0.]\n\n"
        "/x/Yq_1.wav_[1. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. "
        "0. 1.]"  # no final newline
    )
    got = parse_paper_list(p)
    assert len(got) == 2
    assert np.flatnonzero(got[0][1]).tolist() == [1, 13]
    assert np.flatnonzero(got[1][1]).tolist() == [0, 29]


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("a.wav_[0. 1.]\nno vector here\n", 2, "expected a record"),
        ("a.wav_[0. 1.]\nb.wav_[0. 1.\n", 2, "no closing"),
        ("a.wav_[0. 1.\nb.wav_[0. 1.]\n", 1, "before the next record on line 2"),
        ("a.wav_[0. 1.]\nb.wav_[0. x]\n", 2, "non-number"),
        ("a.wav_[0. 1.]\nb.wav_[0. 2.]\n", 2, "other than 0 and 1"),
        ("a.wav_[0. 1.]\nb.wav_[0. 1.].txt\n", 2, "after the label vector"),
        ("a.wav_[0. 1.]\nb.wav_[0. 1. 0.]\n", 2, "3 entries"),
        ("_[0. 1.]\n", 1, "no audio path"),
        ("a.wav_[]\n", 1, "empty label vector"),
    ],
)
def test_malformed_records_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = tmp_path / "bad_list.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=rf"bad_list\.txt, line {line}: .*{what}"):
        parse_paper_list(p)


def test_missing_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        parse_paper_list(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no record"):
        parse_paper_list(tmp_path / "empty.txt")


def test_to_list_frame_train_and_test_positions() -> None:
    rng = np.random.default_rng(1)
    train_vecs = _vectors(rng, 4, 5)
    recs = [(f"/p/Yclip{i}_0.wav", v) for i, v in enumerate(train_vecs)]
    frame = to_list_frame(recs, CLASSES, phase=2, class_split=CLASS_SPLIT, kind="train")
    assert list(frame.columns) == L.LIST_COLUMNS
    assert frame["fname"].tolist() == [f"Yclip{i}_0" for i in range(4)]
    # phase 2 learns classes 35..39: position j <-> CLASSES[35 + j]
    want = L.label_matrix(frame, CLASS_SPLIT.groups[2])
    np.testing.assert_array_equal(want, np.stack(train_vecs))

    test_vecs = _vectors(rng, 3, 40)
    recs = [(f"/p/Yeval{i}_0.wav", v) for i, v in enumerate(test_vecs)]
    frame = to_list_frame(recs, CLASSES, phase=2, class_split=CLASS_SPLIT, kind="test")
    np.testing.assert_array_equal(L.label_matrix(frame, CLASSES[:40]), np.stack(test_vecs))
    assert all("," in name for f in frame["labels"] for name in L.split_labels(f))


def test_to_list_frame_other_vector_order() -> None:
    """The vectors may follow another class order than the class split, within the same phases."""
    class_split = ClassSplit.from_sizes(["a", "b", "c", "d"], [2, 2])
    recs = [("x/Y1_0.wav", np.array([1.0, 0.0])), ("x/Y2_0.wav", np.array([0.0, 1.0]))]
    frame = to_list_frame(recs, ["b", "a", "d", "c"], phase=0, class_split=class_split, kind="train")
    assert frame["labels"].tolist() == ["b", "a"]
    recs = [("x/Y3_0.wav", np.array([1.0, 1.0, 1.0, 0.0]))]
    frame = to_list_frame(recs, ["b", "a", "d", "c"], phase=1, class_split=class_split, kind="test")
    assert frame["labels"].tolist() == ["a|b|d"]  # written in the class split's order
    with pytest.raises(ValueError, match="class split gives"):
        to_list_frame([("x/Y1_0.wav", np.array([1.0, 0.0]))], ["a", "c", "b", "d"], phase=0, class_split=class_split,
                      kind="train")
    with pytest.raises(ValueError, match="different classes"):
        to_list_frame(recs, ["b", "a", "d", "e"], phase=1, class_split=class_split, kind="test")


def test_length_mismatch_names_file_and_lengths() -> None:
    recs = [("/p/Y1_0.wav", np.zeros(30))]
    with pytest.raises(ValueError, match=r"train_phase_1\.txt: .*length 5, found length 30"):
        to_list_frame(recs, CLASSES, phase=1, class_split=CLASS_SPLIT, kind="train", source="train_phase_1.txt")
    with pytest.raises(ValueError, match=r"test_phase_0_1\.txt: .*length 35, found length 30"):
        to_list_frame(recs, CLASSES, phase=1, class_split=CLASS_SPLIT, kind="test", source="test_phase_0_1.txt")


def test_duplicates() -> None:
    v = np.eye(5)[0]
    same = [("a/Y1_0.wav", v), ("b/Y1_0.wav", v)]
    assert len(to_list_frame(same, CLASSES, phase=1, class_split=CLASS_SPLIT, kind="train")) == 1
    with pytest.raises(ValueError, match="twice with different"):
        to_list_frame([("a/Y1_0.wav", v), ("a/Y1_0.wav", np.eye(5)[1])], CLASSES, phase=1, class_split=CLASS_SPLIT,
                      kind="train")


def test_import_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    papers = tmp_path / "papers"
    papers.mkdir()
    truth: dict[str, np.ndarray] = {}  # every test clip's 50-class annotation
    for i in range(6):
        truth[f"Yeval{i}_0"] = (rng.random(50) < 0.15).astype(float)
        truth[f"Yeval{i}_0"][i] = 1.0
    train_truth: dict[int, dict[str, np.ndarray]] = {}
    for k, size in enumerate(SIZES):
        train_truth[k] = {f"Ytr{k}_{i}_0": v for i, v in enumerate(_vectors(rng, 3, size))}
        _write(papers / f"train_phase_{k}.txt",
               [(f"/data/train/{n}.wav", v) for n, v in train_truth[k].items()], npy=k % 2 == 1)
        n_seen = sum(SIZES[: k + 1])
        name = "test_phase_" + "_".join(str(j) for j in range(k + 1)) + ".txt"
        _write(papers / name, [(f"/data/eval/{n}.wav", v[:n_seen]) for n, v in truth.items()])
    # the same training clip in phases 0 and 1: all_labels is the union
    shared_v0 = np.zeros(30)
    shared_v0[3] = 1
    shared_v1 = np.zeros(5)
    shared_v1[4] = 1
    with open(papers / "train_phase_0.txt", "a") as f:
        f.write(_record("/d/Yshared_0.wav", shared_v0) + "\n")
    with open(papers / "train_phase_1.txt", "a") as f:
        f.write(_record("/d/Yshared_0.wav", shared_v1) + "\n")

    out = import_paper_lists(papers, tmp_path / "lists", CLASS_SPLIT)
    assert L.read_classes(out["classes"]) == CLASS_SPLIT
    for k in range(5):
        train = L.read_list(tmp_path / "lists" / f"train_phase{k}.tsv")
        names = list(train_truth[k]) + ["Yshared_0"] * (k < 2)
        assert train["fname"].tolist() == names  # the last record is kept
        np.testing.assert_array_equal(L.label_matrix(train.iloc[:3], CLASS_SPLIT.groups[k]),
                                      np.stack(list(train_truth[k].values())))
        test = L.read_list(tmp_path / "lists" / f"test_phase{k}.tsv")
        assert test["fname"].tolist() == list(truth)
        n_seen = sum(SIZES[: k + 1])
        np.testing.assert_array_equal(L.label_matrix(test, CLASSES[:n_seen]),
                                      np.stack([v[:n_seen] for v in truth.values()]))
        # all_labels: the clip's full annotation from the last cumulative list
        np.testing.assert_array_equal(L.label_matrix(test, CLASSES, column="all_labels"),
                                      np.stack(list(truth.values())))
    t0 = L.read_list(tmp_path / "lists" / "train_phase0.tsv")
    assert L.split_labels(t0.iloc[-1]["all_labels"]) == [CLASSES[3], CLASSES[34]]
    clips_eval = L.read_list(out["clips_eval"])["fname"].tolist()
    assert clips_eval == sorted(truth)
    assert "Yshared_0" in L.read_list(out["clips_dev"])["fname"].tolist()


def test_import_missing_file_and_mismatch(tmp_path: Path) -> None:
    papers = tmp_path / "papers"
    papers.mkdir()
    with pytest.raises(FileNotFoundError, match=r"train_phase_0\.txt.*test_phase_0_1_2_3_4\.txt"):
        import_paper_lists(papers, tmp_path / "out", CLASS_SPLIT)
    for k in range(5):
        n_train = 30 if k == 0 else 5
        _write(papers / f"train_phase_{k}.txt", [("/a/Y1_0.wav", np.eye(n_train)[0])])
        name = "test_phase_" + "_".join(str(j) for j in range(k + 1)) + ".txt"
        _write(papers / name, [("/a/Y2_0.wav", np.eye(30)[0])])  # 30 entries everywhere: wrong after phase 0
    with pytest.raises(ValueError, match=r"test_phase_0_1\.txt: .*length 35, found length 30"):
        import_paper_lists(papers, tmp_path / "out", CLASS_SPLIT)
    assert not (tmp_path / "out").exists()  # nothing written before every file was checked


def _write_folder(papers: Path) -> Path:
    """A complete, leak-free papers' folder: 2 training clips per phase (Ytr<k>_<i>_0), 3 test
    clips (Yeval<i>_0) in every cumulative test list, the first one on line 1."""
    papers.mkdir()
    for k, size in enumerate(SIZES):
        _write(papers / f"train_phase_{k}.txt", [(f"/data/train/Ytr{k}_{i}_0.wav", np.eye(size)[i]) for i in range(2)])
        n_seen = sum(SIZES[: k + 1])
        name = "test_phase_" + "_".join(str(j) for j in range(k + 1)) + ".txt"
        _write(papers / name, [(f"/data/eval/Yeval{i}_0.wav", np.eye(n_seen)[i]) for i in range(3)])
    return papers


def _append(path: Path, audio: str, vector: np.ndarray) -> int:
    """Append one record; returns its (1-based) first line."""
    first = len(path.read_text().splitlines()) + 1
    with open(path, "a") as f:
        f.write(_record(audio, vector) + "\n")
    return first


def test_test_clip_in_a_training_list_is_an_error_naming_both_files_and_lines(tmp_path: Path) -> None:
    papers = _write_folder(tmp_path / "papers")
    # the first test clip, under another folder, also trained on in phase 2 (5-entry vectors: one line each)
    line = _append(papers / "train_phase_2.txt", "/elsewhere/Yeval0_0.wav", np.eye(5)[1])
    assert line == 3
    with pytest.raises(ValueError) as err:
        import_paper_lists(papers, tmp_path / "out", CLASS_SPLIT)
    text = str(err.value)
    assert "Yeval0_0" in text
    assert f"{papers / 'train_phase_2.txt'}, line 3" in text
    assert f"{papers / 'test_phase_0.txt'}, line 1" in text
    assert "remove" in text.lower()  # says the fix
    assert "Yeval1_0" not in text and "Ytr2_0_0" not in text  # only the leaking clip
    assert not (tmp_path / "out").exists()  # nothing written: clips_dev and clips_eval would share it


def test_clip_in_two_training_lists_is_a_warning_naming_files_and_lines(tmp_path: Path, caplog) -> None:
    papers = _write_folder(tmp_path / "papers")
    line = _append(papers / "train_phase_3.txt", "/data/train/Ytr1_0_0.wav", np.eye(5)[4])
    with caplog.at_level("WARNING", logger="cilaudio.paper_lists"):
        out = import_paper_lists(papers, tmp_path / "out", CLASS_SPLIT)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "Ytr1_0_0" in warnings[0]
    assert f"{papers / 'train_phase_1.txt'}, line 1" in warnings[0]
    assert f"{papers / 'train_phase_3.txt'}, line {line}" in warnings[0]
    # imported all the same: in both phases' lists, each labelled with its own phase's classes
    assert "Ytr1_0_0" in L.read_list(out["train"][1])["fname"].tolist()
    assert "Ytr1_0_0" in L.read_list(out["train"][3])["fname"].tolist()
