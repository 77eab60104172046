# The checks that a downloaded dataset is where the config says, run while the DAG is built:
# a missing metadata or list file stops the run at once, naming the file, the config key and
# where the data comes from. Included after common.smk.


def metadata_files(dataset):
    """The dataset's metadata files. For a downloaded dataset that is not there, stop at once
    with the path and where the data comes from (a generated one is made by a rule)."""
    from cilaudio.datasets import download_hint, open_dataset

    files = [str(p) for p in open_dataset(**reader_params(dataset)).metadata_files()]
    if not config["datasets"][dataset]["generate"]["activate"]:
        missing = [f for f in files if not Path(f).exists()]
        if missing and dataset in requested_datasets():
            where = download_hint(config["datasets"][dataset]["format"])
            raise FileNotFoundError(
                f"dataset {dataset!r}: {len(missing)} metadata file(s) missing, e.g. {missing[0]}. "
                f"{where}; then set datasets.{dataset}.root (and files) in the config."
            )
    return files


def papers_list_files(dataset):
    """The papers' list files in `datasets.<dataset>.papers_lists`; stops at once, naming the
    key and the expected names, when one is missing."""
    from cilaudio.paper_lists import missing_paper_lists

    folder = Path(config["datasets"][dataset]["papers_lists"])
    names, missing = missing_paper_lists(folder, n_phases(dataset))
    if missing and dataset in requested_datasets():
        raise FileNotFoundError(
            f"dataset {dataset!r}: {len(missing)} of the papers' list files are missing, e.g. "
            f"{missing[0]}. datasets.{dataset}.papers_lists must name the folder holding "
            f"{', '.join(names)}; set it to null to make the lists from the dataset's metadata."
        )
    return [str(folder / n) for n in names]


def list_sources(dataset):
    """What a dataset's lists are made from: the papers' list files when they are imported,
    else the dataset's metadata."""
    if config["datasets"][dataset]["papers_lists"]:
        return papers_list_files(dataset)
    return metadata_files(dataset)


def requested_datasets():
    """Datasets named by the command line targets, or by run.datasets when there are none."""
    targets = [str(t) for t in workflow.targets] if hasattr(workflow, "targets") else []
    named = {Path(t).parts[1] for t in targets if Path(t).parts[:1] == ("results",) and len(Path(t).parts) > 1}
    return named or set(config["run"]["datasets"])
