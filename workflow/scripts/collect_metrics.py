from cilaudio.logs import setup_job_logging
from cilaudio.workflow_steps import collect_metrics

setup_job_logging(snakemake.log[0])
collect_metrics(list(snakemake.input), snakemake.output[0], methods=snakemake.params.methods)
