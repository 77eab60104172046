from cilaudio.logs import setup_job_logging
from cilaudio.workflow_steps import join_features

setup_job_logging(snakemake.log[0])
join_features(list(snakemake.input), snakemake.output[0])
