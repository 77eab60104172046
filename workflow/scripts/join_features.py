from cilaudio.jobs import job
from cilaudio.workflow_steps import join_features

with job(snakemake):
    join_features(list(snakemake.input), snakemake.output[0])
