from cilaudio.logs import setup_job_logging
from cilaudio.workflow_steps import extract_features

setup_job_logging(snakemake.log[0])
extract_features(
    clips=snakemake.input.clips,
    root=snakemake.params.root,
    split=snakemake.wildcards.split,
    out=snakemake.output[0],
    settings=snakemake.params.features,
    threads=snakemake.threads,
)
