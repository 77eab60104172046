from pathlib import Path

from cilaudio.logs import setup_job_logging
from cilaudio.synth import generate

setup_job_logging(snakemake.log[0])
generate(Path(snakemake.output.dev).parents[1], **snakemake.params.generate)
