from cilaudio.jobs import job
from cilaudio.workflow_steps import compare_norms


def _paths(v):
    return [v] if isinstance(v, str) else [str(p) for p in v]


with job(snakemake):
    inputs = dict(snakemake.input.items())
    compare_norms(
        html=snakemake.output.html,
        tex=snakemake.output.tex,
        md=snakemake.output.md,
        tables={k[len("metrics_"):]: str(v) for k, v in inputs.items() if k.startswith("metrics_")},
        cka={k[len("cka_"):]: _paths(v) for k, v in inputs.items() if k.startswith("cka_")},
        dataset=snakemake.wildcards.dataset,
    )
