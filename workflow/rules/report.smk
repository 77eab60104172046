# The tidy metrics table (one row per seed) and its summary over seeds (mean, std, 95 % interval),
# its figures, and one self-contained HTML report per dataset and norm.


rule collect_metrics:
    input:
        get_metrics_files,
    # update(): Snakemake keeps the finished tables while the job runs and puts them back if it
    # fails, instead of deleting them first (a failed collection never loses the last good table)
    output:
        table=update(path("metrics_table")),
        summary=update(path("summary")),
        # the library version that trained and evaluated each phase model
        versions=update(path("versions")),
    params:
        *code_params("tables"),
        methods=config["run"]["methods"],
    log:
        "logs/{dataset}/{norm}/collect_metrics.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/collect_metrics.py"


rule plot_metrics:
    input:
        path("metrics_table"),
    output:
        report(
            path("figure", figure="metrics"),
            caption="../report/metrics.rst",
            category="Metrics",
        ),
    params:
        *code_params("report"),
    log:
        "logs/{dataset}/{norm}/plot_metrics.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/plot_metrics.py"


rule report:
    input:
        unpack(get_figures),
        table=path("metrics_table"),
        training=path("training_table"),
        versions=path("versions"),
        classes=path("classes"),
        features=[path("features", split=s) for s in ("dev", "eval")],
    output:
        path("report"),
    # the settings the report shows, one param each: a changed setting reruns the reports and
    # the rerun reason names it (cilaudio.jobs.settings_params)
    params:
        *get_report_settings(),
        *code_params("report"),
    log:
        "logs/{dataset}/{norm}/report.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/report.py"
