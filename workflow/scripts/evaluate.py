from cilaudio.jobs import job
from cilaudio.workflow_steps import execution_settings, evaluate

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
        # execution settings, from the config rather than params: changing them reruns nothing
        device=execution_settings(snakemake.config)["device"],
        num_workers=execution_settings(snakemake.config)["execution"]["num_workers"],
        threads=snakemake.threads,
    )
