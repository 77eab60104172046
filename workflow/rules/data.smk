# The dataset (the built-in benchmark is generated; a real download is read in place) and
# the per-phase lists.


rule generate_synth:
    output:
        vocabulary=path("dataset_file", file="FSD50K.ground_truth/vocabulary.csv"),
        dev=path("dataset_file", file="FSD50K.ground_truth/dev.csv"),
        eval=path("dataset_file", file="FSD50K.ground_truth/eval.csv"),
        dev_audio=directory(path("dataset_file", file="FSD50K.dev_audio")),
        eval_audio=directory(path("dataset_file", file="FSD50K.eval_audio")),
    params:
        *code_params("lists"),
        generate=get_generate_params,
    log:
        "logs/{dataset}/generate_synth.log",
    benchmark:
        "benchmarks/{dataset}/generate_synth.tsv"
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/generate_synth.py"


# One list job per dataset: its number of phases comes from the config, so its outputs are
# written out per dataset rather than through a wildcard.
for _dataset in DATASETS:

    rule:
        name:
            f"make_lists_{_dataset}"
        input:
            list_sources(_dataset),
        output:
            classes=path("classes", dataset=_dataset),
            clips_dev=path("clips", dataset=_dataset, split="dev"),
            clips_eval=path("clips", dataset=_dataset, split="eval"),
            train=[path("train_list", dataset=_dataset, phase=k) for k in range(n_phases(_dataset))],
            test=[path("test_list", dataset=_dataset, phase=k) for k in range(n_phases(_dataset))],
        params:
            *code_params("lists"),
            lists=list_params(_dataset),
        log:
            f"logs/{_dataset}/make_lists.log",
        conda:
            "../../envs/cilaudio.yaml"
        script:
            "../scripts/make_lists.py"
