# The configured norms side by side: one self-contained HTML page per dataset, and its final-phase
# table as LaTeX and Markdown for papers.


rule compare_norms:
    input:
        unpack(get_comparison_inputs),
    output:
        html=path("comparison", ext="html"),
        tex=path("comparison", ext="tex"),
        md=path("comparison", ext="md"),
    params:
        *code_params("report"),
    log:
        "logs/{dataset}/comparison.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/compare_norms.py"
