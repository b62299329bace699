"""What every step shares: the Arrow table coder, dead letters, the reason and flag catalogue, count
tallies and metrics, and the bucketed GroupByKey of Arrow tables that the shuffles use."""
