# One job per phase. Phase 0 is shared by every method of a dataset, norm and seed; phase k
# of a method needs phase k-1's checkpoint of the same method. Each job writes its checkpoint
# and a per-epoch table beside it (learning rate, every loss term, time).


rule train_base:
    input:
        features=path("features", split="dev"),
        train_list=path("train_list", phase=0),
        classes=path("classes"),
        pretrained=get_pretrained_file,
    output:
        checkpoint=path("checkpoint", run="base", phase=0),
        history=path("history", run="base", phase=0),
    params:
        *code_params("training"),
        model=get_model_params,
        feature_settings=get_feature_params,
        optim=get_base_optim_params,
        numeric=get_numeric_params,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=720,
    log:
        "logs/{dataset}/{norm}/base/seed{seed}/train_phase0.log",
    benchmark:
        "benchmarks/{dataset}/{norm}/base/seed{seed}/train_phase0.tsv"
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/train_base.py"


rule train_incremental:
    input:
        previous=get_previous_checkpoint,
        features=path("features", split="dev"),
        train_lists=get_train_lists,
        classes=path("classes"),
    output:
        checkpoint=path("checkpoint", run="{method}"),
        history=path("history", run="{method}"),
    wildcard_constraints:
        phase=r"[1-9]\d*",
    params:
        *code_params("training"),
        method=get_method_params,
        model=get_model_params,
        optim=get_incremental_optim_params,
        numeric=get_numeric_params,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=720,
    log:
        "logs/{dataset}/{norm}/{method}/seed{seed}/train_phase{phase}.log",
    benchmark:
        "benchmarks/{dataset}/{norm}/{method}/seed{seed}/train_phase{phase}.tsv"
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/train_incremental.py"


rule collect_training:
    input:
        get_history_files,
    output:
        path("training_table"),
    params:
        *code_params("tables"),
    log:
        "logs/{dataset}/{norm}/collect_training.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/collect_training.py"


rule plot_training:
    input:
        path("training_table"),
    output:
        path("figure", figure="training"),
    params:
        *code_params("report"),
    log:
        "logs/{dataset}/{norm}/plot_training.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/plot_training.py"
