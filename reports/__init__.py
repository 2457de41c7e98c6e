"""The aggregator: records -> pandas (pure functions in ``aggregate``) -> rendered tables."""
