# The tidy metrics table (one row per seed) and its summary over seeds (mean, std, 95 % interval),
# its figures, and one self-contained HTML report per dataset and norm.


rule collect_metrics:
    input:
        get_metrics_files,
    # update(): Snakemake keeps the finished tables while the job runs and puts them back if it
    # fails, instead of deleting them first (a failed collection never loses the last good table)
    output:
        table=update("results/{dataset}/{norm}/metrics.tsv"),
        summary=update("results/{dataset}/{norm}/summary.tsv"),
        # the library version that trained and evaluated each phase model
        versions=update("results/{dataset}/{norm}/versions.tsv"),
    params:
        code=code_param("tables"),
        methods=config["run"]["methods"],
    log:
        "logs/{dataset}/{norm}/collect_metrics.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/collect_metrics.py"


rule plot_metrics:
    input:
        "results/{dataset}/{norm}/metrics.tsv",
    output:
        report(
            "results/{dataset}/{norm}/figures/metrics.png",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
    params:
        code=code_param("report"),
    log:
        "logs/{dataset}/{norm}/plot_metrics.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/plot_metrics.py"


rule report:
    input:
        unpack(get_figures),
        table="results/{dataset}/{norm}/metrics.tsv",
        training="results/{dataset}/{norm}/training.tsv",
        versions="results/{dataset}/{norm}/versions.tsv",
        classes="results/{dataset}/lists/classes.tsv",
        features=expand("results/{{dataset}}/features/{split}.h5", split=["dev", "eval"]),
    output:
        "results/{dataset}/{norm}/report.html",
    params:
        code=code_param("report"),
        config=get_config_params,
    log:
        "logs/{dataset}/{norm}/report.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/report.py"
