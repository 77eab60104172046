"""Class split and list generation against hand-built clip tables."""

import pandas as pd
import pytest

from cilaudio import lists as L
from cilaudio.phases import ClassSplit, match_classes

CLASSES = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture
def class_split():
    return ClassSplit.from_sizes(CLASSES, [2, 2, 2])  # phase 0: a b, 1: c d, 2: e f


@pytest.fixture
def clips():
    return pd.DataFrame({
        "fname": ["1", "2", "3", "4", "5", "6"],
        "labels": [("a",), ("a", "c"), ("d", "zzz"), ("b", "e", "c"), ("zzz",), ("f",)],
        "split": ["train"] * 6,
    })


def test_class_split_groups_and_seen(class_split):
    assert class_split.groups == (("a", "b"), ("c", "d"), ("e", "f"))
    assert class_split.seen(1) == ("a", "b", "c", "d")
    assert class_split.phase_of("e") == 2


@pytest.mark.parametrize("sizes", [[2, 2], [3, 3, 1], [0, 6]])
def test_class_split_rejects_sizes_that_do_not_add_up(sizes):
    with pytest.raises(ValueError, match="phase|class"):
        ClassSplit.from_sizes(CLASSES, sizes)


def test_duplicate_class_rejected():
    with pytest.raises(ValueError, match="more than once"):
        ClassSplit.from_sizes(["a", "a", "b"], [1, 2])


def test_unknown_class_names_closest_match():
    with pytest.raises(ValueError) as err:
        match_classes(["Male speech, man speakin", "Dog"], ["Male speech, man speaking", "Dog", "Cat"],
                      source="config")
    assert "'Male speech, man speakin'" in str(err.value)
    assert "Male speech, man speaking" in str(err.value)
    assert "Dog" not in str(err.value).split("closest")[0].split("\n", 1)[1]


def test_training_lists_latest_assignment(class_split, clips):
    tr = L.training_lists(clips, class_split, assignment="latest")
    as_dict = [dict(zip(f.fname, f.labels)) for f in tr]
    # phase 0: clips with base classes only
    assert as_dict[0] == {"1": "a"}
    # clip 2 (a, c) goes to phase 1, labelled with c only; clip 3 (d) too; unknown labels dropped
    assert as_dict[1] == {"2": "c", "3": "d"}
    # clip 4 (b, e, c) goes to phase 2 labelled e only; its all_labels keeps every known class
    assert as_dict[2] == {"4": "e", "6": "f"}
    assert tr[2].set_index("fname").loc["4", "all_labels"] == "b|c|e"


def test_training_lists_other_assignments(class_split, clips):
    earliest = L.training_lists(clips, class_split, assignment="earliest")
    assert dict(zip(earliest[0].fname, earliest[0].labels)) == {"1": "a", "2": "a", "4": "b"}
    every = L.training_lists(clips, class_split, assignment="every")
    assert sorted(every[1].fname) == ["2", "3", "4"]
    with pytest.raises(ValueError, match="phase 0 has no training clip"):
        L.training_lists(clips[clips.fname != "1"], class_split, assignment="exclusive")


def test_test_lists_are_cumulative(class_split, clips):
    te = L.test_lists(clips, class_split)
    assert list(te[0].fname) == ["1", "2", "4"]
    assert dict(zip(te[0].fname, te[0].labels))["4"] == "b"
    assert list(te[1].fname) == ["1", "2", "3", "4"]
    assert dict(zip(te[1].fname, te[1].labels))["4"] == "b|c"
    assert list(te[2].fname) == ["1", "2", "3", "4", "6"]  # clip 5 has no configured class


def test_list_round_trip_and_label_matrix(tmp_path, class_split, clips):
    tr = L.training_lists(clips, class_split)
    path = tmp_path / "train_phase2.tsv"
    L.write_list(tr[2], path)
    text = path.read_text()
    assert text.splitlines()[0] == "fname\tlabels\tall_labels"
    back = L.read_list(path)
    y = L.label_matrix(back, class_split.seen(2))
    assert y.tolist() == [[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]]
    y_all = L.label_matrix(back, class_split.seen(2), column="all_labels")
    assert y_all[0].tolist() == [0, 1, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="row 2"):
        L.label_matrix(back, class_split.seen(1), source=str(path))


def test_classes_round_trip(tmp_path, class_split):
    L.write_classes(class_split, tmp_path / "classes.tsv")
    assert L.read_classes(tmp_path / "classes.tsv") == class_split


def test_config_readme_is_generated_from_the_schema():
    from pathlib import Path

    from cilaudio.configdoc import render

    repo = Path(__file__).resolve().parents[1]
    expected = render(repo / "workflow/schemas/config.schema.yaml")
    assert (repo / "config/README.md").read_text() == expected, (
        "config/README.md is out of date: python -m cilaudio.configdoc "
        "workflow/schemas/config.schema.yaml > config/README.md")
