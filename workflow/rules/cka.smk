# Linear CKA between the phase-0 model and each later phase's model, every pair of layers; one
# job per method and seed computes every phase.


rule cka:
    input:
        reference="results/{dataset}/{norm}/base/seed{seed}/phase0.pt",
        others=get_method_checkpoints,
        features="results/{dataset}/features/eval.h5",
        base_list="results/{dataset}/lists/test_phase0.tsv",
        classes="results/{dataset}/lists/classes.tsv",
    output:
        "results/{dataset}/{norm}/{method}/seed{seed}/cka.npz",
    params:
        code=code_param("cka"),
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
            "results/{dataset}/{norm}/figures/cka_heatmaps.png",
            caption="../report/cka_heatmaps.rst",
            category="CKA",
        ),
        diagonal=report(
            "results/{dataset}/{norm}/figures/cka_diagonal.png",
            caption="../report/cka_diagonal.rst",
            category="CKA",
        ),
    params:
        code=code_param("report"),
    log:
        "logs/{dataset}/{norm}/plot_cka.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/plot_cka.py"
