"""Job wrapper: logs to the declared file; bad input is not retried, other failures are."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from cilaudio.logs import job


class Params(dict):
    pass


def _smk(tmp_path, value=1):
    if not (tmp_path / "in.txt").exists():
        (tmp_path / "in.txt").write_text("x")
    return SimpleNamespace(log=[str(tmp_path / "logs" / "step.log")], params=Params(value=value),
                           input=[str(tmp_path / "in.txt")])


def test_bad_input_fails_at_once_on_retry_of_the_same_job(tmp_path):
    calls = []

    def step():
        calls.append(1)
        raise FileNotFoundError("clip 123.wav does not exist")

    with pytest.raises(FileNotFoundError):
        with job(_smk(tmp_path)):
            step()
    assert (tmp_path / "logs/step.log.bad-input").read_text().endswith("clip 123.wav does not exist")
    with pytest.raises(SystemExit):  # the retry does not run the step again
        with job(_smk(tmp_path)):
            step()
    assert len(calls) == 1
    assert "not retried" in (tmp_path / "logs/step.log").read_text()
    assert "clip 123.wav does not exist" in (tmp_path / "logs/step.log").read_text()
    # another setting makes it another job: it runs
    with job(_smk(tmp_path, value=2)):
        logging.getLogger("cilaudio").info("ran")
    assert not (tmp_path / "logs/step.log.bad-input").exists()


def test_other_failures_are_retried(tmp_path):
    with pytest.raises(MemoryError):
        with job(_smk(tmp_path)):
            raise MemoryError("out of memory")
    assert not (tmp_path / "logs/step.log.bad-input").exists()
    ran = []
    with job(_smk(tmp_path)):
        ran.append(1)
    assert ran == [1]
