from cilaudio.logs import setup_job_logging
from cilaudio.workflow_steps import make_report

setup_job_logging(snakemake.log[0])
make_report(
    out=snakemake.output[0],
    table=snakemake.input.table,
    classes=snakemake.input.classes,
    figures={k: v for k, v in snakemake.input.items() if k not in ("table", "classes")},
    config=snakemake.params.config,
    dataset=snakemake.wildcards.dataset,
    norm=snakemake.wildcards.norm,
)
