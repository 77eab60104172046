# One job per phase. Phase 0 is shared by every method of a dataset, norm and seed; phase k
# of a method needs phase k-1's checkpoint of the same method. Each job writes its checkpoint
# and a per-epoch table beside it (learning rate, every loss term, time).


rule train_base:
    input:
        features="results/{dataset}/features/dev.h5",
        train_list="results/{dataset}/lists/train_phase0.tsv",
        classes="results/{dataset}/lists/classes.tsv",
    output:
        checkpoint="results/{dataset}/{norm}/base/seed{seed}/phase0.pt",
        history="results/{dataset}/{norm}/base/seed{seed}/phase0_history.tsv",
    params:
        code=code_param("training"),
        model=get_model_params,
        features=get_feature_params,
        optim=get_base_optim_params,
        loader=get_loader_params,
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
        features="results/{dataset}/features/dev.h5",
        train_lists=get_train_lists,
        classes="results/{dataset}/lists/classes.tsv",
    output:
        checkpoint="results/{dataset}/{norm}/{method}/seed{seed}/phase{phase}.pt",
        history="results/{dataset}/{norm}/{method}/seed{seed}/phase{phase}_history.tsv",
    wildcard_constraints:
        phase=r"[1-9]\d*",
    params:
        code=code_param("training"),
        method=get_method_params,
        model=get_model_params,
        optim=get_incremental_optim_params,
        loader=get_loader_params,
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
        "results/{dataset}/{norm}/training.tsv",
    params:
        code=code_param("tables"),
    log:
        "logs/{dataset}/{norm}/collect_training.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/collect_training.py"


rule plot_training:
    input:
        "results/{dataset}/{norm}/training.tsv",
    output:
        "results/{dataset}/{norm}/figures/training.png",
    params:
        code=code_param("report"),
    log:
        "logs/{dataset}/{norm}/plot_training.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/plot_training.py"
