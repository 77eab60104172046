# Metrics after every phase on the cumulative test list; base-class metrics on the phase-0
# test clips every time.


rule evaluate:
    input:
        checkpoint=get_run_checkpoint,
        features="results/{dataset}/features/eval.h5",
        test_list="results/{dataset}/lists/test_phase{phase}.tsv",
        base_list="results/{dataset}/lists/test_phase0.tsv",
        classes="results/{dataset}/lists/classes.tsv",
    output:
        "results/{dataset}/{norm}/{run}/seed{seed}/metrics_phase{phase}.json",
    params:
        threshold=config["evaluation"]["threshold"],
        batch_size=config["evaluation"]["batch_size"],
        device=config["training"]["device"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/{dataset}/{norm}/{run}/seed{seed}/evaluate_phase{phase}.log",
    benchmark:
        "benchmarks/{dataset}/{norm}/{run}/seed{seed}/evaluate_phase{phase}.tsv"
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/evaluate.py"
