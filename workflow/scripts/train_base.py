from cilaudio.logs import job
from cilaudio.workflow_steps import tensorboard_dir, train_base

with job(snakemake):
    train_base(
        classes=snakemake.input.classes,
        train_list=snakemake.input.train_list,
        features=snakemake.input.features,
        out=snakemake.output.checkpoint,
        norm=snakemake.wildcards.norm,
        seed=int(snakemake.wildcards.seed),
        model=snakemake.params.model,
        feature_settings=snakemake.params.features,
        optim=snakemake.params.optim,
        loader=snakemake.params.loader,
        device=snakemake.params.device,
        threads=snakemake.threads,
        # an execution setting, read from the config rather than a param: turning it on or off
        # reruns nothing
        tensorboard=tensorboard_dir(snakemake.log[0], snakemake.config),
    )
