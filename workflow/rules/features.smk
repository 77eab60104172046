# Log-mel features of every clip that a list names, one HDF5 file per split.


rule extract_features:
    input:
        clips="results/{dataset}/lists/clips_{split}.tsv",
        audio=get_audio_dirs,
    output:
        "results/{dataset}/features/{split}.h5",
    params:
        features=get_feature_params,
        root=get_dataset_root,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    log:
        "logs/{dataset}/extract_features_{split}.log",
    benchmark:
        "benchmarks/{dataset}/extract_features_{split}.tsv"
    conda:
        "../../envs/cilaudio.yaml"
    script:
        "../scripts/extract_features.py"
