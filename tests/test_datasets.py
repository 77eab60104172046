"""The dataset formats' registry: every format the config accepts has a reader that opens a
dataset through the one interface and says where its data comes from; the schema's list of
formats is the registry's, so a new format is one module and one entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cilaudio.datasets import FORMATS, download_hint, open_dataset, reader_class

REPO = Path(__file__).resolve().parents[1]


def test_schema_formats_are_the_registry():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["$defs"]["dataset"]["properties"]["format"]["enum"] == list(FORMATS)


@pytest.mark.parametrize("format", list(FORMATS))
def test_every_reader_has_the_interface(tmp_path, format):
    reader = open_dataset(format, tmp_path, {})
    for name in ("metadata_files", "load_vocabulary", "load_split", "audio_dir", "audio_path"):
        assert callable(getattr(reader, name)), name
    assert reader.audio_dir("dev") != reader.audio_dir("eval")
    assert all(Path(p).is_relative_to(tmp_path) for p in reader.metadata_files())
    assert "http" in download_hint(format) and reader_class(format).DOWNLOAD == download_hint(format)


def test_unknown_format_names_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset format 'wav_folder'.*fsd50k"):
        open_dataset("wav_folder", tmp_path)
