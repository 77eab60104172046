# The configured norms side by side: one self-contained HTML page per dataset, and its final-phase
# table as LaTeX and Markdown for papers.


rule compare_norms:
    input:
        unpack(get_comparison_inputs),
    output:
        html="results/{dataset}/comparison.html",
        tex="results/{dataset}/comparison.tex",
        md="results/{dataset}/comparison.md",
    params:
        code=code_param("report"),
    log:
        "logs/{dataset}/comparison.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/compare_norms.py"
