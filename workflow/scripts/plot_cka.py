from cilaudio.jobs import job
from cilaudio.workflow_steps import plot_cka

with job(snakemake):
    plot_cka(list(snakemake.input), heatmaps=snakemake.output.heatmaps, diagonal=snakemake.output.diagonal)
