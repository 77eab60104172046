"""The config schema as YAML reads it: every key holds a value and every description is a whole
sentence. An unquoted comma inside a flow mapping (``{description: Epochs (papers, 120).}``)
silently cuts the description there and adds a key ``120).`` with a null value; the config
documentation (config/README.md) then shows half a sentence."""

from __future__ import annotations

from pathlib import Path

import yaml

from cilaudio import methods

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
SENTENCE_ENDS = (".", "?", "!", ".)", '."')


def _walk(node, where: str = ""):
    """(dotted path, key, value) of every mapping entry in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, key, value
            yield from _walk(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}[{i}]")


def _problems(document) -> list[str]:
    problems = []
    for path, key, value in _walk(document):
        if value is None and key != "default":  # a default may be null (root: null, classes: null)
            problems.append(f"{path}: null value (an unquoted comma in a flow mapping?)")
        if key == "description" and not (isinstance(value, str) and value.rstrip().endswith(SENTENCE_ENDS)):
            problems.append(f"{path}: {value!r} does not end a sentence")
    return problems


def test_the_check_finds_a_description_cut_at_a_comma():
    cut = yaml.safe_load("epochs: {type: integer, default: 120, description: Training epochs (papers, 120).}")
    assert sorted(_problems(cut)) == [
        "epochs.120).: null value (an unquoted comma in a flow mapping?)",
        "epochs.description: 'Training epochs (papers' does not end a sentence",
    ]
    assert _problems(yaml.safe_load('e: {default: null, description: "Epochs (papers, 120)."}')) == []


def test_schema_has_no_null_key_and_whole_sentences():
    assert _problems(yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))) == []


def test_method_settings_are_described_in_whole_sentences():
    assert _problems({"methods": methods.method_schema()}) == []
