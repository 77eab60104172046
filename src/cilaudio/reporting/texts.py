"""The reports' fixed texts: how they name the norms, the protocol notes, the figure captions,
the definition of backward transfer and where a run's training settings differ from the papers'
(:func:`deviations`)."""

from __future__ import annotations

from typing import Mapping

#: How the reports name each normalisation (cilaudio.model.make_norm builds them).
NORM_NAMES = {"bn": "BatchNorm", "gn": "GroupNorm", "cn": "Continual Normalization"}


def norm_name(norm: str) -> str:
    """``"bn"`` -> ``"BatchNorm (bn)"``; unknown names are returned as they are."""
    return f"{NORM_NAMES[norm]} ({norm})" if norm in NORM_NAMES else str(norm)


# What the report says about the protocol, next to the numbers it explains.
PROTOCOL_NOTES = [
    "Training lists of phase k label their clips with phase k's classes only; test lists after "
    "phase k label them with every class seen so far. Base-class metrics (and so forgetting) "
    "are measured on the phase-0 test clips after every phase, unlike the reference code, "
    "which compares different clip sets.",
    "mAP, lwlrap, ROC AUC and d-prime are computed from the continuous scores (the standard "
    "definitions; d-prime from the mean AUC, as AudioSet papers report it). The "
    "reference code's variants computed on 0/1 predictions are shown separately and named "
    "'thresholded (reference)'; use them only to compare with published numbers.",
    "Feature distillation takes the new model's embedding after the last block's dropout, as the "
    "reference model returns it (fd_embedding). Unless a method sets fd_pass: second, the new model "
    "runs one forward pass per batch that BCE, feature distillation and output distillation all use; "
    "the reference code runs a second pass, with other dropout masks, for the feature distillation "
    "(the method indl_fd_od_ref does that).",
    "In phases 1-4 the BCE has one pos_weight for the old classes' columns and one for the new "
    "classes' (each negatives / positives over that group's known entries; the new classes' equals "
    "the reference's) and is averaged per clip over the entries it is labelled for; a replayed "
    "exemplar is labelled for its own phase's classes only.",
    "KL output distillation averages over every element (batch x old classes), times T^2, as "
    "the reference does; the adaptive weight is lambda_base * (n_seen / n_new) ** exponent.",
]


CAPTIONS = {
    "metrics": "Metrics after every phase (mean over seeds; band: the 95 % t-interval of the mean over seeds, "
               "mean ± t(0.975, n-1) · s / √n with s the sample standard deviation over the n seeds; no band "
               "with one seed).",
    "training": "Training loss (the total that was minimised) per epoch: one panel per method, one line "
                "per phase (later phases darker), mean over seeds with a min..max band. Every loss term, "
                "the learning rate and the time of each epoch are in training.tsv.",
    "cka_heatmaps": "Linear CKA between every layer of the phase-0 model (rows) and of the final "
                    "phase's model (columns), per method, on the base-class test clips.",
    "cka_diagonal": "CKA of each layer with itself between the phase-0 model and each later "
                    "phase's model, one panel per method, one line per phase (later phases darker; squares, "
                    "shaded: norm layers): low values show where the representation drifted.",
}


BWT_DEFINITION = (
    "Backward transfer BWT = (1/K) * sum over j = 0..K-1 of (R[K, j] - R[j, j]), where R[k, j] is the mAP "
    "of class group j (the classes introduced in phase j) measured after phase k and K is the final phase. "
    "It is computed per seed, then averaged; negative = the earlier groups lost accuracy after they were learnt."
)


PAPERS = {"base": {"epochs": 120, "batch_size": 32, "lr": 0.01, "lr_min": 0.0001},
          "incremental": {"epochs": 120, "batch_size": 32, "lr": 0.001, "lr_min": 0.0001}}


def deviations(config: Mapping) -> list[str]:
    """Where this run's training settings are not the papers' (said in the report)."""
    notes = []
    for stage, ref in PAPERS.items():
        ours = config["training"][stage]
        diff = [f"{k} {ours[k]} (papers: {v})" for k, v in ref.items() if ours.get(k) != v]
        if diff:
            name = "phase 0" if stage == "base" else "phases 1-4"
            notes.append(f"This run's {name} differ from the papers' settings: {', '.join(diff)}.")
    if config["model"]["width"] != 64:
        notes.append(f"CNN14 width {config['model']['width']} (papers: 64).")
    return notes
