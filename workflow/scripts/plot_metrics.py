from cilaudio.jobs import job
from cilaudio.workflow_steps import plot_metrics

with job(snakemake):
    plot_metrics(snakemake.input[0], snakemake.output[0])
