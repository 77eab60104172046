from cilaudio.logs import job
from cilaudio.workflow_steps import evaluate

with job(snakemake):
    evaluate(
        classes=snakemake.input.classes,
        checkpoint=snakemake.input.checkpoint,
        test_list=snakemake.input.test_list,
        base_list=snakemake.input.base_list,
        features=snakemake.input.features,
        out=snakemake.output[0],
        meta=dict(snakemake.wildcards.items()),
        threshold=snakemake.params.threshold,
        batch_size=snakemake.params.batch_size,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
