# Helpers shared by every rule: config validation, wildcard constraints, input and params
# functions (named get_*). Included first.

import functools
import sys
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")


def _complete_methods():
    """Each method's settings checked against the method registry (cilaudio.methods), with
    the `distillation` block as the default of the distillation settings and every other
    default filled in. A method's own setting of a mechanism that is off (memory_clips
    without replay, ...) is refused; the `distillation` block, inherited by every method, is not."""
    from cilaudio import methods

    for name, given in config["methods"].items():
        config["methods"][name] = methods.complete(
            given or {}, where=f"methods.{name}", inherited=config["distillation"])


_complete_methods()


def _check_config():
    """Cross-key checks that a JSON schema cannot express."""
    from cilaudio.config_checks import check_class_list, check_run_settings, pretrained_front_end_notes

    errors, notes = [], []
    for key in ("datasets", "methods"):
        for name in config["run"][key]:
            if name not in config[key]:
                errors.append(
                    f"run.{key} names {name!r}, which is not defined under `{key}:` "
                    f"(defined: {sorted(config[key])})"
                )
    for name in config["cka"]["methods"] or []:
        if name not in config["methods"]:
            errors.append(f"cka.methods names {name!r}, which is not defined under `methods:`")
    for name, ds in config["datasets"].items():
        if ds["root"] is None and not ds["generate"]["activate"]:
            errors.append(
                f"datasets.{name}: set `root` (the folder of a downloaded dataset) "
                "or `generate: {activate: true}` (the built-in benchmark)"
            )
        if ds["papers_lists"] and ds["classes"] is None:
            errors.append(
                f"datasets.{name}.papers_lists needs datasets.{name}.classes: the class names in "
                "the order of the lists' label vectors (a list, or a file with one name per line)"
            )
        # duplicates, misspelt names (with the closest ones) and the count against `phases`,
        # now rather than in the list job (cilaudio.config_checks)
        errors.extend(check_class_list(name, ds, notes))
    # tensorboard without the package, cka.methods outside run.methods, a missing model.pretrained
    errors.extend(check_run_settings(config))
    notes.extend(pretrained_front_end_notes(config))
    for note in notes:  # own-data labels left out on purpose (a subset of the classes)
        print(f"note: {note}", file=sys.stderr)
    if errors:
        raise ValueError("config error:\n  " + "\n  ".join(errors))


_check_config()


def canonical(value):
    """A params value with its mappings' keys sorted, recursively. Snakemake compares params
    as text, so without this, reordering keys in a config file (or merging two config files)
    would rerun every job."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


# Every file a rule writes or reads, named once. A rule uses a pattern as it is ({dataset} and
# the other wildcards), or with some fields fixed: path("checkpoint", run="base", phase=0); an
# input function fills in all of them: path("checkpoint", wildcards, phase=k).
PATHS = {
    "dataset": "results/{dataset}/dataset",
    "dataset_file": "results/{dataset}/dataset/{file}",
    "classes": "results/{dataset}/lists/classes.tsv",
    "clips": "results/{dataset}/lists/clips_{split}.tsv",
    "train_list": "results/{dataset}/lists/train_phase{phase}.tsv",
    "test_list": "results/{dataset}/lists/test_phase{phase}.tsv",
    "shard": "results/{dataset}/features/{split}/shard{shard}of{n_shards}.h5",
    "features": "results/{dataset}/features/{split}.h5",
    "checkpoint": "results/{dataset}/{norm}/{run}/seed{seed}/phase{phase}.pt",
    "history": "results/{dataset}/{norm}/{run}/seed{seed}/phase{phase}_history.tsv",
    "metrics_json": "results/{dataset}/{norm}/{run}/seed{seed}/metrics.json",
    "cka": "results/{dataset}/{norm}/{run}/seed{seed}/cka.npz",
    "metrics_table": "results/{dataset}/{norm}/metrics.tsv",
    "summary": "results/{dataset}/{norm}/summary.tsv",
    "versions": "results/{dataset}/{norm}/versions.tsv",
    "training_table": "results/{dataset}/{norm}/training.tsv",
    "figure": "results/{dataset}/{norm}/figures/{figure}.png",
    "report": "results/{dataset}/{norm}/report.html",
    "comparison": "results/{dataset}/comparison.{ext}",
}


class _KeepWildcards(dict):
    def __missing__(self, key):
        return f"{{{key}}}"


def path(name, wildcards=None, **fields):
    """PATHS[name] filled in with a job's ``wildcards`` (if given) and ``fields``, which take
    precedence; the rest stay wildcards."""
    values = dict(wildcards.items()) if wildcards is not None else {}
    values.update(fields)
    return PATHS[name].format_map(_KeepWildcards(values))


DATASETS = list(config["datasets"])
METHODS = list(config["methods"])


wildcard_constraints:
    dataset="|".join(DATASETS),
    norm="bn|gn|cn",
    method="|".join(METHODS),
    run="|".join(["base"] + METHODS),
    split="dev|eval",
    seed=r"\d+",
    phase=r"\d+",
    shard=r"\d+",
    n_shards=r"\d+",


def n_phases(dataset):
    return len(config["datasets"][dataset]["phases"])


def dataset_root(dataset):
    ds = config["datasets"][dataset]
    return path("dataset", dataset=dataset) if ds["generate"]["activate"] else ds["root"]


def run_methods(dataset):
    """The methods whose phases 1..K a dataset trains (none with a single phase)."""
    return config["run"]["methods"] if n_phases(dataset) > 1 else []


def phase_jobs(dataset):
    """(run, phase) of every training job of one dataset, norm and seed: phase 0 of `base`,
    then phases 1..K of each method."""
    return [("base", 0)] + [(m, k) for m in run_methods(dataset) for k in range(1, n_phases(dataset))]


def run_outputs(dataset, norm, seed):
    """Every checkpoint, metrics file and CKA file of one dataset, norm and seed."""
    run = dict(dataset=dataset, norm=norm, seed=seed)
    out = [path("checkpoint", **run, run=r, phase=k) for r, k in phase_jobs(dataset)]
    out += [path("metrics_json", **run, run=r) for r in ["base", *run_methods(dataset)]]
    # CKA is computed for the first seed (what the figures show)
    if config["cka"]["activate"] and seed == config["run"]["seeds"][0]:
        out += [path("cka", **run, run=m) for m in run_methods(dataset) if m in cka_methods()]
    return out


def get_final_output():
    """The reports, and every phase output they summarise: listing the checkpoints as targets
    makes `snakemake` recompute one that was deleted (Snakemake otherwise skips a missing
    intermediate file whose dependants are up to date), then everything that depends on it."""
    out = []
    for d in config["run"]["datasets"]:
        out.append(path("comparison", dataset=d, ext="html"))
        for n in config["run"]["norms"]:
            out.append(path("report", dataset=d, norm=n))
            for seed in config["run"]["seeds"]:
                out.extend(run_outputs(d, n, seed))
    return out


def reader_params(dataset):
    """How to open a dataset: its layout, folder and (AudioSet) file names."""
    ds = config["datasets"][dataset]
    return {"format": ds["format"], "root": dataset_root(dataset), "files": ds["files"]}


def list_params(dataset):
    ds = config["datasets"][dataset]
    return canonical(
        {
            **reader_params(dataset),
            "classes": ds["classes"],
            "phases": ds["phases"],
            "assignment": ds["assignment"],
            "train_splits": ds["train_splits"],
            # only when set: adding the key would change every existing run's params
            **({"papers_lists": ds["papers_lists"]} if ds["papers_lists"] else {}),
        }
    )


def get_generate_params(wildcards):
    ds = config["datasets"][wildcards.dataset]
    settings = {k: v for k, v in ds["generate"].items() if k != "activate"}
    return canonical({**settings, "group_sizes": ds["phases"]})


def get_feature_params(wildcards):
    """The feature settings; `front_end` only when it is not the papers' (so the results made
    before the setting existed are still up to date)."""
    settings = dict(config["datasets"][wildcards.dataset]["features"])
    if settings.get("front_end") == "papers":
        del settings["front_end"]
    return canonical(settings)


def get_reader_params(wildcards):
    ds = config["datasets"][wildcards.dataset]
    return canonical({**reader_params(wildcards.dataset), "on_bad_audio": ds["on_bad_audio"]})


def get_feature_shards(wildcards):
    n = config["datasets"][wildcards.dataset]["shards"]
    return [path("shard", wildcards, shard=i, n_shards=n) for i in range(n)]


def get_audio_dirs(wildcards):
    """For a generated dataset the audio folders are outputs of `generate_synth`."""
    if not config["datasets"][wildcards.dataset]["generate"]["activate"]:
        return []
    return [path("dataset_file", dataset=wildcards.dataset, file=f"FSD50K.{wildcards.split}_audio")]


def get_audio_fingerprint(wildcards):
    """Names, sizes and times of a downloaded dataset's audio files of one split
    (`cilaudio.datasets.audio_fingerprint`), as a param of extraction and join: rewriting,
    adding or removing a clip extracts that split again. A generated dataset's audio folders
    are declared inputs (outputs of `generate_synth`) instead."""
    if config["datasets"][wildcards.dataset]["generate"]["activate"]:
        return "generated"
    return _audio_fingerprint(wildcards.dataset, wildcards.split)


@functools.lru_cache(maxsize=None)
def _audio_fingerprint(dataset, split):
    from cilaudio.datasets import audio_fingerprint, open_dataset

    return audio_fingerprint(open_dataset(**reader_params(dataset)).audio_dir(split))


def get_previous_checkpoint(wildcards):
    k = int(wildcards.phase) - 1
    return path("checkpoint", wildcards, run="base" if k == 0 else wildcards.method, phase=k)


def get_train_lists(wildcards):
    """Phase k's list last; before it every earlier list for cumulative (joint) methods, or
    phase k-1's list for replay methods (the exemplar candidates beside the old memory)."""
    from cilaudio.methods import needs_previous_list

    k = int(wildcards.phase)
    method = config["methods"][wildcards.method]
    if method["data"] == "cumulative":
        first = 0
    elif needs_previous_list(method):
        first = k - 1
    else:
        first = k
    return [path("train_list", dataset=wildcards.dataset, phase=j) for j in range(first, k + 1)]


def get_method_params(wildcards):
    """The method's settings that differ from their defaults, the distillation ones only for
    methods that distil: changing the temperature reruns exactly the methods that distil, and
    a new mechanism (off by default) reruns nothing."""
    from cilaudio.methods import without_defaults

    method = dict(config["methods"][wildcards.method])
    if method["output_distill"] == "none":
        for key in config["distillation"]:
            method.pop(key)
    return canonical(without_defaults(method))


def get_numeric_params(wildcards):
    """The training settings that change results (on a GPU): the arithmetic precision and
    deterministic algorithms (`cilaudio.train.NumericSettings`). The execution settings (`num_workers`, `in_memory`,
    `features_on_gpu`, `device`) are not params: the scripts read them from the config
    (`cilaudio.workflow_steps.execution_settings`), so changing them reruns nothing."""
    return canonical({k: config["training"][k] for k in ("precision", "deterministic")})


def code_params(kind):
    """Positional params (one function each) for a rule: with `provenance.rerun_on_code_change`,
    one "cilaudio.<module> sha256:<hash>" per library module that a kind of job runs
    (`cilaudio.code_version.JOB_ENTRY_MODULES`), so that editing one of them reruns exactly
    those jobs and Snakemake's rerun reason (the values only in the old and only in the new
    params) names the module; off, one constant (an edit then reruns nothing: the start-up note
    names it, and the reports warn when their results come from several versions)."""
    if not config["provenance"]["rerun_on_code_change"]:
        return [_constant("not tracked")]
    from cilaudio.code_version import job_code_params

    return [_constant(value) for value in job_code_params(kind)]


def _note_library_changes():
    """One line at start-up when the library differs from the version that the existing
    results' jobs ran (`cilaudio.code_version.changed_since_recorded`); the main process only."""
    if not workflow.is_main_process:
        return
    from cilaudio.code_version import changed_since_recorded, library_change_note

    note = library_change_note(changed_since_recorded(),
                               rerun_on_code_change=config["provenance"]["rerun_on_code_change"])
    if note:
        print(note, file=sys.stderr)


_note_library_changes()


def get_report_settings():
    """The whole config as one param per setting (`cilaudio.jobs.settings_params`): Snakemake
    explains a params rerun by the values that differ, so the reason names the changed setting
    rather than printing the config twice."""
    from cilaudio.jobs import settings_params

    # functions, so that Snakemake does not read braces in a value as wildcards
    return [_constant(value) for value in settings_params(canonical(config))]


def _constant(value):
    def get(wildcards):
        return value

    return get


def get_model_params(wildcards):
    """The model settings; `gn_groups` only for the norms that have groups (GroupNorm and CN),
    so that changing it reruns no BatchNorm job."""
    model = dict(config["model"])
    model.pop("pretrained", None)  # an input file of phase 0 (get_pretrained_file), not a setting
    if wildcards.norm == "bn":
        model.pop("gn_groups", None)
    return canonical(model)


def get_pretrained_file(wildcards):
    """The PANNs checkpoint phase 0 starts from (`model.pretrained`), or nothing."""
    return [config["model"]["pretrained"]] if config["model"].get("pretrained") else []


def get_base_optim_params(wildcards):
    return canonical(config["training"]["base"])


def get_incremental_optim_params(wildcards):
    return canonical(config["training"]["incremental"])


def chain_phases(dataset, run):
    """The phases of one chain: the shared phase 0 (`base`), or phases 1..K of a method."""
    return [0] if run == "base" else list(range(1, n_phases(dataset)))


def get_chain_phases(wildcards):
    return chain_phases(wildcards.dataset, wildcards.run)


def get_chain_checkpoints(wildcards):
    """The checkpoints evaluated by one `evaluate` job, in phase order."""
    return [path("checkpoint", wildcards, phase=k) for k in chain_phases(wildcards.dataset, wildcards.run)]


def get_chain_test_lists(wildcards):
    """Each phase's cumulative test list, in the order of `get_chain_checkpoints`."""
    return [path("test_list", dataset=wildcards.dataset, phase=k) for k in chain_phases(wildcards.dataset, wildcards.run)]


def get_method_checkpoints(wildcards):
    """Phases 1..K of a method and seed (the models that `cka` compares with phase 0)."""
    return [path("checkpoint", wildcards, run=wildcards.method, phase=k)
            for k in chain_phases(wildcards.dataset, wildcards.method)]


def cka_methods():
    return config["cka"]["methods"] or config["run"]["methods"]


def get_metrics_files(wildcards):
    return [
        out
        for seed in config["run"]["seeds"]
        for out in run_outputs(wildcards.dataset, wildcards.norm, seed)
        if out.endswith(".json")
    ]


def get_history_files(wildcards):
    """The per-epoch table of every training job of a norm: phase 0 and each method's phases."""
    return [path("history", wildcards, run=run, phase=k, seed=seed)
            for seed in config["run"]["seeds"] for run, k in phase_jobs(wildcards.dataset)]


def get_cka_files(wildcards):
    seed = config["run"]["seeds"][0]
    return [path("cka", wildcards, run=m, seed=seed) for m in cka_methods()]


def get_figures(wildcards):
    names = ["metrics", "training"] + (["cka_heatmaps", "cka_diagonal"] if config["cka"]["activate"] else [])
    return {name: path("figure", wildcards, figure=name) for name in names}


def get_comparison_inputs(wildcards):
    """Inputs of `compare_norms`: every configured norm's metrics table (`metrics_<norm>`) and,
    with CKA on, its CKA files of the first seed for every CKA method (`cka_<norm>`, as
    `get_cka_files`; the page compares the final phase)."""
    dataset = wildcards.dataset
    seed = config["run"]["seeds"][0]
    out = {}
    for norm in config["run"]["norms"]:
        out[f"metrics_{norm}"] = path("metrics_table", dataset=dataset, norm=norm)
        if config["cka"]["activate"] and n_phases(dataset) > 1:
            out[f"cka_{norm}"] = [path("cka", dataset=dataset, norm=norm, run=m, seed=seed) for m in cka_methods()]
    return out
