"""convtree's benchmark: speed goals measured by hand, as ratios to baselines taken in the same run."""
