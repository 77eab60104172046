from cilaudio.jobs import job
from cilaudio.workflow_steps import make_lists

with job(snakemake):
    make_lists(outputs=dict(snakemake.output.items()), **snakemake.params.lists)
