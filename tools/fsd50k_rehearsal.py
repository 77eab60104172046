"""A rehearsal of the FSD50K preset's data path on a generated dataset of FSD50K's shape.

``--scale 1`` writes 40,966 development and 10,231 evaluation clips in FSD50K's layout (a
fraction of them with a smaller scale), with the label statistics of the papers' 50 classes
(:mod:`cilaudio.label_statistics`), several labels per clip, and clip lengths in FSD50K's range
with its mean per split (:mod:`cilaudio.clip_lengths`), as 44.1 kHz 16-bit WAV like the real
files. Then it runs the preset's data path on it and measures every stage:

1. ``generate``: the dataset (this tool's own stage; not part of a real run);
2. ``lists``, ``extract_<split>`` and ``join_<split>``: the workflow itself (``snakemake`` with
   ``config/presets/fsd50k.yaml``: the lists job, 16 extraction shards per split, one at a time
   with the rule's 2 threads on 2 cores, timed per job from their benchmark files, then the join);
3. ``train``: one phase-0 epoch at full width (CNN14, width 64), bounded to ``--steps`` batches
   of 32, streaming from the joined HDF5 file as the preset does (``training.in_memory: false``);
4. ``evaluate``: one checkpoint (phase 0's model grown to 50 classes) on every evaluation
   excerpt (phase 4's test list, which holds every evaluation clip);
5. ``cka``: CKA between phase 0 and that model on a subset of the base-class test clips
   (every tenth: the mini-batch CKA's cost is linear in the excerpts and its memory is one batch's).

Each stage runs in its own process; its wall time, peak resident memory (the process's and its
children's), the disk it leaves and its items per second are printed and written to
``<work>/figures.json``. ``--compare A B`` prints how each figure grew from one rehearsal to
another. The audio is deleted at the end unless ``--keep-audio``::

    .venv/bin/python tools/fsd50k_rehearsal.py --scale 0.1 --work /tmp/rehearsal_10
    .venv/bin/python tools/fsd50k_rehearsal.py --scale 0.25 --work /tmp/rehearsal_25
    .venv/bin/python tools/fsd50k_rehearsal.py --compare /tmp/rehearsal_10 /tmp/rehearsal_25
    .venv/bin/python tools/fsd50k_rehearsal.py --grid /tmp/rehearsal_25     # the full grid, GPU-hours

``--grid`` reads a rehearsal's lists (kept with its results; only the audio is deleted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SNAKEMAKE = str(Path(PY).parent / "snakemake")


def disk_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def run_stage(cmd: list[str], *, cwd: Path | None = None) -> dict:
    """Run ``cmd``; its wall time and the peak RSS of it and its children (``wait4``)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"stage failed ({proc.returncode}): {' '.join(cmd)}\n{out[-4000:]}")
    # ru_maxrss of wait4 is the largest of the process and its waited-for descendants (kB)
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "output": out}


def _python(code: str) -> list[str]:
    return [PY, "-c", code]


GENERATE = """
import json, sys
from cilaudio import synth
from cilaudio.clip_lengths import N_CLIPS
scale = float(sys.argv[1])
dev, ev = round(N_CLIPS["dev"] * scale), round(N_CLIPS["eval"] * scale)
synth.generate(sys.argv[2], seed=2026, dev_clips=dev, eval_clips=ev, durations="fsd50k", sample_rate=44100)
import soundfile as sf, glob
secs = sum(sf.info(f).duration for f in glob.glob(sys.argv[2] + "/FSD50K.*_audio/*.wav"))
print(json.dumps({"clips": dev + ev, "hours": secs / 3600}))
"""

TRAIN = """
import json, sys, time, torch
from pathlib import Path
from cilaudio.lists import read_classes
from cilaudio.model import CNN14, ModelSettings
from cilaudio.train import ExecutionSettings, OptimSettings, fit, pos_weights_of, seed_everything
from cilaudio.training_data import training_set
from cilaudio.checkpoint import save_checkpoint
res, steps = Path(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(2)
seed_everything(0)
split = read_classes(res / "lists/classes.tsv")
start = time.monotonic()
data = training_set(phase=0, split=split, lists=[res / "lists/train_phase0.tsv"], features=res / "features/dev.h5",
                    cumulative=False, in_memory=False)
built = time.monotonic() - start
model = CNN14(ModelSettings(norm="bn", width=64, n_mels=64, n_classes=len(split.seen(0))))
pw = pos_weights_of(data.table.targets, 0)
def step_loss(x, y):
    logits, _ = model(x)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pw)
    return loss, {"bce": loss.detach(), "total": loss.detach()}
start = time.monotonic()
fit(model=model, data=data, optim=OptimSettings(epochs=1, batch_size=32, lr=0.01, lr_min=0.01), seed=0,
    execution=ExecutionSettings(num_workers=0, in_memory=False), device=torch.device("cpu"), step_loss=step_loss,
    what="rehearsal", epoch_size=steps * 32)
trained = time.monotonic() - start
save_checkpoint(res / "rehearsal/phase0.pt", model=model, classes=list(split.seen(0)), phase=0, method="base",
                seed=0, params={})
model.grow_classifier(len(split.seen(4)) - len(split.seen(0)))
save_checkpoint(res / "rehearsal/phase4.pt", model=model, classes=list(split.seen(4)), phase=4, method="rehearsal",
                seed=0, params={})
print(json.dumps({"excerpts_in_phase0": len(data), "training_set_s": built, "steps": steps,
                  "excerpts_per_s": steps * 32 / trained}))
"""

EVALUATE = """
import json, sys, time
from pathlib import Path
from cilaudio.evaluate import evaluate_chain
from cilaudio.lists import read_classes
res = Path(sys.argv[1])
split = read_classes(res / "lists/classes.tsv")
start = time.monotonic()
(record,) = evaluate_chain(checkpoints=[res / "rehearsal/phase4.pt"], phases=[4], test_lists=[res / "lists/test_phase4.tsv"],
                           split=split, base_list=res / "lists/test_phase0.tsv", features=res / "features/eval.h5",
                           out=res / "rehearsal/metrics.json", meta={"dataset": "fsd50k", "norm": "bn", "method": "rehearsal",
                           "seed": 0}, batch_size=64, threads=2)
n = record["n_excerpts"]["all"]
print(json.dumps({"excerpts": n, "excerpts_per_s": n / (time.monotonic() - start)}))
"""

CKA = """
import json, sys, time
from pathlib import Path
from cilaudio.evaluate import cka_chain
from cilaudio.lists import read_classes
from cilaudio.lists import read_list
res = Path(sys.argv[1])
subset = read_list(res / "lists/test_phase0.tsv").iloc[::10]  # every tenth base test clip
subset.to_csv(res / "rehearsal/cka_clips.tsv", sep="\t", index=False)
start = time.monotonic()
cka_chain(reference=res / "rehearsal/phase0.pt", others=[res / "rehearsal/phase4.pt"], split=read_classes(res / "lists/classes.tsv"),
          base_list=res / "rehearsal/cka_clips.tsv", features=res / "features/eval.h5", out=res / "rehearsal/cka.npz",
          meta={"dataset": "fsd50k"}, batch_size=64, threads=2)
import numpy as np
n = int(np.load(res / "rehearsal/cka.npz")["n_excerpts"])
print(json.dumps({"excerpts": n, "excerpts_per_s": n / (time.monotonic() - start)}))
"""


def last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def workflow_config(work: Path) -> Path:
    override = work / "rehearsal.yaml"
    override.write_text(
        "run: {datasets: [fsd50k], norms: [bn], seeds: [0], methods: [finetune]}\n"
        f"datasets:\n  fsd50k:\n    root: {work / 'FSD50K'}\n"
        "    classes: null  # the generated vocabulary's names, in its order\n")
    config = work / "config"
    config.mkdir(exist_ok=True)
    shutil.copy(REPO / "config/config.yaml", config / "config.yaml")
    return override


def job_figures(work: Path, pattern: str) -> dict:
    """Sum and maximum over the jobs' benchmark files (``s``, ``max_rss``) matching ``pattern``."""
    import pandas as pd

    files = sorted((work / "benchmarks/fsd50k").glob(pattern))
    frames = [pd.read_csv(f, sep="\t") for f in files]
    if not frames:
        return {}
    table = pd.concat(frames)
    return {"jobs": len(files), "job_s_sum": round(float(table["s"].sum()), 1),
            "job_s_max": round(float(table["s"].max()), 1), "job_peak_rss_mb": round(float(table["max_rss"].max()), 1)}


def rehearse(scale: float, work: Path, steps: int, keep_audio: bool) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    res = work / "results/fsd50k"
    figures: dict[str, dict] = {"scale": {"value": scale}}
    stage = run_stage(_python(GENERATE) + [str(scale), str(work / "FSD50K")], cwd=REPO)
    figures["generate"] = {**{k: v for k, v in stage.items() if k != "output"}, **last_json(stage["output"]),
                           "disk_mb": round(disk_mb(work / "FSD50K"), 1)}
    print("generate", figures["generate"], flush=True)
    override = workflow_config(work)
    smk = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", "2"]
    presets = ["--configfile", str(REPO / "config/presets/fsd50k.yaml"), str(override)]
    stages = [("lists", ["results/fsd50k/lists/test_phase4.tsv"], None, res / "lists")]
    for split in ("dev", "eval"):  # the shards (2 jobs at a time), then the join alone
        target = f"results/fsd50k/features/{split}.h5"
        stages += [(f"extract_{split}", [target, "--until", "extract_features"], f"extract_features_{split}*.tsv",
                    res / f"features/{split}"),
                   (f"join_{split}", [target], None, res / f"features/{split}.h5")]
    for name, target, pattern, out in stages:
        stage = run_stage(smk + target + presets, cwd=work)
        figures[name] = {"wall_s": stage["wall_s"], "peak_rss_mb": stage["peak_rss_mb"], "disk_mb": round(disk_mb(out), 1),
                         **(job_figures(work, pattern) if pattern else {})}
        if name.startswith("join"):
            import h5py

            with h5py.File(out, "r") as h5:
                n = int(h5["features"].shape[0])
            figures[name].update(excerpts=n, excerpts_per_s=round(n / stage["wall_s"], 1))
            figures[name.replace("join", "extract")].update(
                excerpts=n, excerpts_per_s_per_core=round(n / figures[name.replace("join", "extract")]["job_s_sum"], 1))
        print(name, figures[name], flush=True)
    for name, code, args in (("train", TRAIN, [str(res), str(steps)]), ("evaluate", EVALUATE, [str(res)]),
                             ("cka", CKA, [str(res)])):
        stage = run_stage(_python(code) + args, cwd=REPO)
        figures[name] = {**{k: v for k, v in stage.items() if k != "output"}, **last_json(stage["output"])}
        print(name, figures[name], flush=True)
    figures["results_disk_mb"] = {"value": round(disk_mb(res), 1)}
    (work / "figures.json").write_text(json.dumps(figures, indent=1))
    if not keep_audio:
        shutil.rmtree(work / "FSD50K")
    return figures


def compare(a: Path, b: Path) -> None:
    fa, fb = (json.loads((p / "figures.json").read_text()) for p in (a, b))
    ratio = fb["scale"]["value"] / fa["scale"]["value"]
    print(f"scale {fa['scale']['value']} -> {fb['scale']['value']} (x{ratio:.2f}); each figure: A, B, B/A")
    for stage in fa:
        if stage == "scale":
            continue
        for key, va in fa[stage].items():
            vb = fb.get(stage, {}).get(key)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va:
                print(f"  {stage:13s} {key:18s} {va:>12,.1f} {vb:>12,.1f}  x{vb / va:.2f}")


#: Cost of one step of each kind of method relative to a plain training step (forward +
#: backward = 3 forward passes): the frozen old model's forward adds 1/3; a second forward pass
#: with gradient (``fd_pass: second``) adds a whole step.
OLD_MODEL_FORWARD, SECOND_PASS = 1 / 3, 1.0


def grid_estimate(work: Path, *, train_rate: float, gpu_factor: float) -> None:
    """The FSD50K preset's full grid at FSD50K's full size: the excerpts of every training,
    evaluation and CKA job, from this rehearsal's lists scaled by 1/scale, and GPU-hours at
    ``train_rate`` (full-width training excerpts/s measured here) times ``gpu_factor``
    (a forward pass alone costs a third of a training step)."""
    import numpy as np
    import yaml

    from cilaudio import methods as registry
    from cilaudio.excerpts import excerpt_index
    from cilaudio.lists import read_list

    figures = json.loads((work / "figures.json").read_text())
    up = 1 / figures["scale"]["value"]
    res = work / "results/fsd50k"
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    preset = yaml.safe_load((REPO / "config/presets/fsd50k.yaml").read_text())
    epochs = preset["training"]["base"]["epochs"], preset["training"]["incremental"]["epochs"]
    n_norms, n_seeds = len(default["run"]["norms"]), len(preset["run"]["seeds"])
    index = {s: excerpt_index(res / f"features/{s}.h5") for s in ("dev", "eval")}

    def excerpts(frame, split):
        return sum(len(index[split].get(f, ())) for f in frame["fname"])

    train = [read_list(res / f"lists/train_phase{k}.tsv") for k in range(5)]
    test = [read_list(res / f"lists/test_phase{k}.tsv") for k in range(5)]
    own = [excerpts(t, "dev") * up for t in train]
    union = [excerpts(pd_concat(train[: k + 1]), "dev") * up for k in range(5)]
    per_clip = sum(own[:4]) / sum(len(t) * up for t in train[:4])  # excerpts per old clip
    rate = train_rate * gpu_factor
    print(f"FSD50K at full size (this rehearsal's lists x {up:g}): phase-0 training excerpts {own[0]:,.0f}; "
          f"phases 1-4 {', '.join(f'{n:,.0f}' for n in own[1:])}; test excerpts {excerpts(test[4], 'eval') * up:,.0f}")
    print(f"training rate {train_rate:.2f} excerpts/s on this CPU x GPU factor {gpu_factor:g} = {rate:,.0f}/s")
    hours = {"phase 0": epochs[0] * own[0] / rate / 3600 * n_norms * n_seeds}
    print(f"  phase 0: {epochs[0]} epochs x {own[0]:,.0f} = {hours['phase 0'] / n_norms / n_seeds:.2f} GPU-h per job, "
          f"{n_norms * n_seeds} jobs")
    for name in preset["run"]["methods"]:
        values = registry.complete({**default["methods"][name], **preset["methods"].get(name, {})})
        cost = 1 + (OLD_MODEL_FORWARD if registry.needs_old_model(values) else 0) \
            + (SECOND_PASS if values["feature_distill"] > 0 and values["fd_pass"] == "second" else 0)
        per_phase = []
        for k in range(1, 5):
            n = union[k] if values["data"] == "cumulative" else own[k]
            if values["replay"] != "none":
                n += min(values["memory_clips"], sum(len(t) * up for t in train[:k])) * per_clip
            per_phase.append(epochs[1] * n * cost / rate / 3600)
        hours[name] = sum(per_phase) * n_norms * n_seeds
        print(f"  {name:28s} step cost x{cost:.2f}: GPU-h per phase job {', '.join(f'{h:.2f}' for h in per_phase)}")
    n_test = sum(excerpts(t, "eval") * up for t in test)  # a chain's evaluation: every phase's test list
    base = excerpts(test[0], "eval") * up
    forward = rate * 3
    hours["evaluation"] = (n_test * (1 + len(preset["run"]["methods"]))) / forward / 3600 * n_norms * n_seeds
    hours["cka"] = 4 * 2 * base * len(preset["run"]["methods"]) / forward / 3600 * n_norms
    print(f"  evaluation: {n_test:,.0f} excerpts per chain, cka: {base:,.0f} base test excerpts x 2 models per phase")
    total = sum(hours.values())
    print("GPU-hours of the grid: " + ", ".join(f"{k} {v:.1f}" for k, v in hours.items()) + f"; total {total:.0f}")


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames).drop_duplicates("fname")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, help="fraction of FSD50K's clips (1: 40,966 dev + 10,231 eval)")
    parser.add_argument("--work", type=Path, help="folder for the dataset, the results and figures.json")
    parser.add_argument("--steps", type=int, default=20, help="training batches of 32 at full width (default 20)")
    parser.add_argument("--keep-audio", action="store_true", help="keep the generated audio")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="two rehearsals' folders")
    parser.add_argument("--grid", type=Path, metavar="WORK",
                        help="a rehearsal's folder: the FSD50K preset's grid at full size, in GPU-hours")
    parser.add_argument("--gpu-factor", type=float, default=300.0,
                        help="GPU training rate / this CPU's (README, 'A rehearsal at FSD50K's size')")
    args = parser.parse_args(argv)
    if args.compare:
        compare(*args.compare)
    elif args.grid:
        figures = json.loads((args.grid / "figures.json").read_text())
        grid_estimate(args.grid, train_rate=figures["train"]["excerpts_per_s"], gpu_factor=args.gpu_factor)
    elif args.scale and args.work:
        rehearse(args.scale, args.work, args.steps, args.keep_audio)
    else:
        parser.error("give --scale and --work, or --compare A B")


if __name__ == "__main__":
    main()
