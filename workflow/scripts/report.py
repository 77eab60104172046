from cilaudio.jobs import job, settings_from_params
from cilaudio.workflow_steps import report

with job(snakemake):
    report(
        out=snakemake.output[0],
        table=snakemake.input.table,
        training=snakemake.input.training,
        versions=snakemake.input.versions,
        classes=snakemake.input.classes,
        figures={k: v for k, v in snakemake.input.items() if k not in ("table", "training", "versions", "classes", "features")},
        features=list(snakemake.input.features),
        config=settings_from_params(snakemake.params),
        dataset=snakemake.wildcards.dataset,
        norm=snakemake.wildcards.norm,
    )
