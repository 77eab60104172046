"""Job wrapper: logs to the declared file; bad input is not retried, other failures are."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from cilaudio.jobs import job


class Params(dict):
    pass


def _smk(tmp_path, value=1, attempt=2):
    """A Snakemake job's script object; attempt 2 is Snakemake's retry of a failed job."""
    if not (tmp_path / "in.txt").exists():
        (tmp_path / "in.txt").write_text("x")
    return SimpleNamespace(log=[str(tmp_path / "logs" / "step.log")], params=Params(value=value),
                           input=[str(tmp_path / "in.txt")], resources=SimpleNamespace(attempt=attempt))


def test_bad_input_fails_at_once_on_retry_of_the_same_job(tmp_path):
    calls = []

    def step():
        calls.append(1)
        raise FileNotFoundError("clip 123.wav does not exist")

    with pytest.raises(FileNotFoundError):
        with job(_smk(tmp_path, attempt=1)):
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


def test_a_new_run_tries_again_after_bad_input(tmp_path):
    """A file fixed in place changes no input of the job: a new run (attempt 1) must run it."""
    calls = []

    def step(fail):
        calls.append(fail)
        if fail:
            raise ValueError("cannot decode audio file 7.wav")

    with pytest.raises(ValueError):
        with job(_smk(tmp_path, attempt=1)):
            step(True)
    with job(_smk(tmp_path, attempt=1)):  # same inputs and settings, a new run
        step(False)
    assert calls == [True, False]
    assert not (tmp_path / "logs/step.log.bad-input").exists()


def test_without_the_attempt_resource_every_run_tries(tmp_path):
    smk = _smk(tmp_path)
    del smk.resources.attempt
    for _ in range(2):
        with pytest.raises(KeyError):
            with job(smk):
                raise KeyError("no such class")
    assert "not retried" not in (tmp_path / "logs/step.log").read_text()

