# Class-incremental learning for multi-label audio classification, end to end.
# The DAG: dataset (generated or downloaded) -> phase lists -> log-mel features (HDF5) ->
# phase 0 -> phase 1 -> ... -> phase K (one job each, chained by checkpoints) -> evaluation
# and CKA per phase -> tidy metrics table, figures -> one self-contained report per norm.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data_checks.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/cka.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/comparison.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
