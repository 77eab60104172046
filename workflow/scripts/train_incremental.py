from cilaudio.jobs import job
from cilaudio.workflow_steps import execution_settings, tensorboard_dir, train_incremental

with job(snakemake):
    train_incremental(
        classes=snakemake.input.classes,
        train_lists=list(snakemake.input.train_lists),
        features=snakemake.input.features,
        previous=snakemake.input.previous,
        out=snakemake.output.checkpoint,
        phase=int(snakemake.wildcards.phase),
        method_name=snakemake.wildcards.method,
        seed=int(snakemake.wildcards.seed),
        method=snakemake.params.method,
        model=snakemake.params.model,
        optim=snakemake.params.optim,
        # execution settings (device, loader workers, in-memory features, TensorBoard) come from
        # the config, not from params: changing them reruns nothing
        numeric=snakemake.params.numeric,
        execution=execution_settings(snakemake.config)["execution"],
        device=execution_settings(snakemake.config)["device"],
        threads=snakemake.threads,
        tensorboard=tensorboard_dir(snakemake.log[0], snakemake.config),
    )
