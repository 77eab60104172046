from cilaudio.jobs import job
from cilaudio.workflow_steps import execution_settings, cka

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
        # execution settings, from the config rather than params: changing them reruns nothing
        device=execution_settings(snakemake.config)["device"],
        num_workers=execution_settings(snakemake.config)["execution"]["num_workers"],
        threads=snakemake.threads,
    )
