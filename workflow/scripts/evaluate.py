from cilaudio.logs import job
from cilaudio.workflow_steps import evaluate

with job(snakemake):
    evaluate(
        classes=snakemake.input.classes,
        checkpoints=list(snakemake.input.checkpoints),
        phases=snakemake.params.phases,
        test_lists=list(snakemake.input.test_lists),
        base_list=snakemake.input.base_list,
        features=snakemake.input.features,
        out=snakemake.output[0],
        meta=dict(snakemake.wildcards.items()),
        threshold=snakemake.params.threshold,
        batch_size=snakemake.params.batch_size,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
