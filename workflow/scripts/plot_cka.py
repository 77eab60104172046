from cilaudio.logs import setup_job_logging
from cilaudio.workflow_steps import plot_cka

setup_job_logging(snakemake.log[0])
plot_cka(list(snakemake.input), heatmaps=snakemake.output.heatmaps, diagonal=snakemake.output.diagonal)
