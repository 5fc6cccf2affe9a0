"""The pure core of convtree: events, tree and windowing rules, errors. No I/O, no clock."""
