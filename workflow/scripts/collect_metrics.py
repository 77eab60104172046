from cilaudio.jobs import job
from cilaudio.workflow_steps import collect_metrics

with job(snakemake):
    collect_metrics(
        list(snakemake.input),
        snakemake.output.table,
        methods=snakemake.params.methods,
        summary=snakemake.output.summary,
        versions=snakemake.output.versions,
    )
