from cilaudio.logs import job
from cilaudio.workflow_steps import collect_metrics

with job(snakemake):
    collect_metrics(list(snakemake.input), snakemake.output[0], methods=snakemake.params.methods)
