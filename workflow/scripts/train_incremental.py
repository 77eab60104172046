from cilaudio.logs import job
from cilaudio.workflow_steps import tensorboard_dir, train_incremental

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
        loader=snakemake.params.loader,
        device=snakemake.params.device,
        threads=snakemake.threads,
        # an execution setting, read from the config rather than a param: turning it on or off
        # reruns nothing
        tensorboard=tensorboard_dir(snakemake.log[0], snakemake.config),
    )
