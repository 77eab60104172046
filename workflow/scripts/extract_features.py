from cilaudio.jobs import job
from cilaudio.workflow_steps import extract_features

with job(snakemake):
    extract_features(
        clips=snakemake.input.clips,
        split=snakemake.wildcards.split,
        out=snakemake.output[0],
        settings=snakemake.params.feature_settings,
        shard=int(snakemake.wildcards.shard),
        n_shards=int(snakemake.wildcards.n_shards),
        threads=snakemake.threads,
        **snakemake.params.reader,
    )
