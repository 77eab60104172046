from pathlib import Path

from cilaudio.jobs import job
from cilaudio.workflow_steps import generate_synth

with job(snakemake):
    generate_synth(out_dir=str(Path(snakemake.output.dev).parents[1]), settings=snakemake.params.generate)
