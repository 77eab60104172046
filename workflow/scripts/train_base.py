from cilaudio.logs import job
from cilaudio.workflow_steps import train_base

with job(snakemake):
    train_base(
        classes=snakemake.input.classes,
        train_list=snakemake.input.train_list,
        features=snakemake.input.features,
        out=snakemake.output[0],
        norm=snakemake.wildcards.norm,
        seed=int(snakemake.wildcards.seed),
        model=snakemake.params.model,
        feature_settings=snakemake.params.features,
        optim=snakemake.params.optim,
        loader=snakemake.params.loader,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
