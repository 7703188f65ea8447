"""What jobs did: run records, the run report, timelines and plan graphs."""
