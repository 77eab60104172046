# Linear CKA between the phase-0 model and each later phase's model, every pair of layers; one
# job per method and seed computes every phase.


rule cka:
    input:
        reference=path("checkpoint", run="base", phase=0),
        others=get_method_checkpoints,
        features=path("features", split="eval"),
        base_list=path("test_list", phase=0),
        classes=path("classes"),
    output:
        path("cka", run="{method}"),
    params:
        *code_params("cka"),
        batch_size=config["cka"]["batch_size"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/{dataset}/{norm}/{method}/seed{seed}/cka.log",
    benchmark:
        "benchmarks/{dataset}/{norm}/{method}/seed{seed}/cka.tsv"
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/cka.py"


rule plot_cka:
    input:
        get_cka_files,
    output:
        heatmaps=report(
            path("figure", figure="cka_heatmaps"),
            caption="../report/cka_heatmaps.rst",
            category="CKA",
        ),
        diagonal=report(
            path("figure", figure="cka_diagonal"),
            caption="../report/cka_diagonal.rst",
            category="CKA",
        ),
    params:
        *code_params("report"),
    log:
        "logs/{dataset}/{norm}/plot_cka.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/plot_cka.py"
