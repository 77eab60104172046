from cilaudio.logs import setup_job_logging
from cilaudio.workflow_steps import plot_metrics

setup_job_logging(snakemake.log[0])
plot_metrics(snakemake.input[0], snakemake.output[0])
