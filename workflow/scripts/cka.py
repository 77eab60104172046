from cilaudio.logs import job
from cilaudio.workflow_steps import cka

with job(snakemake):
    cka(
        classes=snakemake.input.classes,
        reference=snakemake.input.reference,
        others=list(snakemake.input.others),
        base_list=snakemake.input.base_list,
        features=snakemake.input.features,
        out=snakemake.output[0],
        meta=dict(snakemake.wildcards.items()),
        batch_size=snakemake.params.batch_size,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
