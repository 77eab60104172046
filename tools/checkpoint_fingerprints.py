"""Fingerprints of every phase checkpoint under a results folder: what a refactoring must not
change.

For each ``phase*.pt`` it prints one line: the path, a sha256 of the model's tensors (names,
dtypes, shapes and bytes, in the state's order), a sha256 of everything else the checkpoint
holds except ``code_version`` (which names the library that wrote it, and so changes with
any edit), and a sha256 of the phase's history table without its timing columns
(``seconds``, ``clips_per_s``). Two runs of the same configuration and seed, before and after
a change of the code, give identical lines exactly when the change computes the same weights,
mechanism states and loss curves::

    .venv/bin/python tools/checkpoint_fingerprints.py results/synth > before.txt
    # ... change the code, delete results/, rerun the same workflow ...
    .venv/bin/python tools/checkpoint_fingerprints.py results/synth > after.txt
    diff before.txt after.txt && echo identical

``--run WORKDIR`` first runs the tiny workflow of the tests (``tests/configs/tiny.yaml``) in
WORKDIR with a chain of each kind of method (finetune, joint, the papers' method in both
forward-pass modes, replay, replay with frozen blocks, pseudo-labels, MAS, the analytic
classifier) and then fingerprints it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "clips_per_s")
#: One chain per kind of mechanism (their settings are config/config.yaml's).
METHODS = ["finetune", "joint", "indl_fd_od", "indl_fd_od_ref", "indl_fd_od_replay_balanced",
           "indl_fd_od_replay_anneal_freeze", "indl_pl_fd_od", "finetune_mas", "analytic_pl"]


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def rest_digest(checkpoint: dict) -> str:
    rest = {k: v for k, v in checkpoint.items() if k not in ("model_state", "code_version")}
    buffer = io.BytesIO()
    torch.save(rest, buffer)  # tensors of mechanism states included, byte for byte
    return hashlib.sha256(buffer.getvalue()).hexdigest()[:16]


def history_digest(path: Path) -> str:
    if not path.exists():
        return "no-history"
    frame = pd.read_csv(path, sep="\t").drop(columns=[c for c in TIMING], errors="ignore")
    return hashlib.sha256(frame.to_csv(sep="\t", index=False).encode()).hexdigest()[:16]


def fingerprints(results: Path) -> list[str]:
    lines = []
    for pt in sorted(results.rglob("phase*.pt")):
        checkpoint = torch.load(pt, map_location="cpu", weights_only=False)
        history = pt.with_name(pt.stem + "_history.tsv")
        lines.append(f"{pt.relative_to(results)} weights={tensor_digest(checkpoint['model_state'])} "
                     f"rest={rest_digest(checkpoint)} history={history_digest(history)}")
    return lines


def run_tiny(workdir: Path) -> Path:
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    methods = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["methods"]
    config["methods"] = {**methods, **config["methods"]}
    config["methods"]["indl_fd_od_replay_balanced"]["memory_clips"] = 6
    config["methods"]["indl_fd_od_replay_anneal_freeze"]["memory_clips"] = 6
    config["run"]["methods"] = METHODS
    config["cka"]["methods"] = []
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake = Path(sys.executable).parent / "snakemake"
    targets = [f"results/synth/bn/{m}/seed0/phase4.pt" for m in METHODS]
    subprocess.run([str(snakemake), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
                    str(workdir / "config.yaml"), "--cores", "2", *targets], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return workdir / "results" / "synth"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, help="a results folder (results/<dataset>)")
    parser.add_argument("--run", type=Path, metavar="WORKDIR",
                        help="first run the tiny workflow with one chain per kind of method in WORKDIR")
    args = parser.parse_args(argv)
    if args.run is None and args.results is None:
        parser.error("give a results folder, or --run WORKDIR")
    results = run_tiny(args.run) if args.run is not None else args.results
    print("\n".join(fingerprints(results)))


if __name__ == "__main__":
    main()
