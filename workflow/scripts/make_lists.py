from cilaudio.logs import setup_job_logging
from cilaudio.workflow_steps import make_lists

setup_job_logging(snakemake.log[0])
make_lists(outputs=dict(snakemake.output.items()), **snakemake.params.lists)
