from cilaudio.jobs import job
from cilaudio.workflow_steps import execution_settings, tensorboard_dir, train_base

with job(snakemake):
    train_base(
        classes=snakemake.input.classes,
        train_list=snakemake.input.train_list,
        features=snakemake.input.features,
        out=snakemake.output.checkpoint,
        norm=snakemake.wildcards.norm,
        seed=int(snakemake.wildcards.seed),
        model=snakemake.params.model,
        feature_settings=snakemake.params.feature_settings,
        optim=snakemake.params.optim,
        # execution settings (device, loader workers, in-memory features, TensorBoard) come from
        # the config, not from params: changing them reruns nothing
        numeric=snakemake.params.numeric,
        execution=execution_settings(snakemake.config)["execution"],
        device=execution_settings(snakemake.config)["device"],
        threads=snakemake.threads,
        tensorboard=tensorboard_dir(snakemake.log[0], snakemake.config),
        pretrained=snakemake.input.pretrained,
    )
