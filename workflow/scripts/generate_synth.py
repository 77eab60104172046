from pathlib import Path

from cilaudio.logs import job
from cilaudio.synth import generate

with job(snakemake):
    generate(Path(snakemake.output.dev).parents[1], **snakemake.params.generate)
