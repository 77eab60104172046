# The configured norms side by side: one self-contained HTML page per dataset.


rule compare_norms:
    input:
        unpack(get_comparison_inputs),
    output:
        "results/{dataset}/comparison.html",
    log:
        "logs/{dataset}/comparison.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/comparison.py"
