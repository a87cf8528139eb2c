"""Names of the files camsweep writes into a trial folder: torch-free, so that reading a run
(`camsweep status`, export) does not load the training stack."""

STATE_FILE = "state.pt"  # the latest training state (model, optimizer, history)
BEST_FILE = "best.pt"  # the best-validation weights
RESULTS_FILE = "results.json"  # final metrics, history and provenance
PER_IMAGE_FILE = "per_image.npz"  # per-image test metrics (for paired statistics)
CONFIG_FILE = "config.yaml"  # the resolved trial config, runnable with `camsweep train`
SPLIT_FILE = "split.csv"  # the fold's split, one row per frame
