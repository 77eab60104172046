# Metrics after every phase on the cumulative test list; base-class metrics on the phase-0
# test clips every time. One job per chain (the shared phase 0, or phases 1..K of a method and
# seed) writes every phase's metrics: a job's start-up costs more than scoring its clips.


rule evaluate:
    input:
        checkpoints=get_chain_checkpoints,
        test_lists=get_chain_test_lists,
        features=path("features", split="eval"),
        base_list=path("test_list", phase=0),
        classes=path("classes"),
    output:
        path("metrics_json"),
    params:
        *code_params("evaluation"),
        phases=get_chain_phases,
        threshold=config["evaluation"]["threshold"],
        batch_size=config["evaluation"]["batch_size"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/{dataset}/{norm}/{run}/seed{seed}/evaluate.log",
    benchmark:
        "benchmarks/{dataset}/{norm}/{run}/seed{seed}/evaluate.tsv"
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/evaluate.py"
