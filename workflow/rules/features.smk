# Log-mel features of every clip that a list names: one job per shard of a split (parallel
# on a cluster), joined into one self-contained HDF5 file per split (the features are copied,
# in blocks). Readers use only the joined file, so the shards are temp(): Snakemake deletes
# them once joined, and extracts them again only when the joined file must be rebuilt
# (deleted, or its features settings changed: join_features has the same params as
# extraction, so a change of settings reruns the join, which needs the shards again). For a
# downloaded dataset the params hold a fingerprint of the split's audio files (names, sizes,
# times): a clip rewritten in place, added or removed extracts the split again.


rule extract_features:
    input:
        clips=path("clips"),
        audio=get_audio_dirs,
    output:
        temp(path("shard")),
    params:
        *code_params("features"),
        feature_settings=get_feature_params,
        reader=get_reader_params,
        audio=get_audio_fingerprint,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    log:
        "logs/{dataset}/extract_features_{split}_shard{shard}of{n_shards}.log",
    benchmark:
        "benchmarks/{dataset}/extract_features_{split}_shard{shard}of{n_shards}.tsv"
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/extract_features.py"


rule join_features:
    input:
        get_feature_shards,
    output:
        path("features"),
    params:
        *code_params("features"),
        # not used by the join: a change of them must rebuild the joined file (see above)
        feature_settings=get_feature_params,
        reader=get_reader_params,
        audio=get_audio_fingerprint,
    resources:
        # copies the split's features (hundreds of GB for AudioSet), a block at a time
        runtime=240,
    log:
        "logs/{dataset}/join_features_{split}.log",
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/join_features.py"
