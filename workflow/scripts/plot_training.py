from cilaudio.jobs import job
from cilaudio.workflow_steps import plot_training

with job(snakemake):
    plot_training(snakemake.input[0], snakemake.output[0])
