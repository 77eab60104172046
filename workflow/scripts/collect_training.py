from cilaudio.jobs import job
from cilaudio.workflow_steps import collect_training

with job(snakemake):
    collect_training(list(snakemake.input), snakemake.output[0])
