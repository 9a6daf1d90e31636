"""NetworkPolicy parsing, validation, compilation to map state, and the datapath lookup model."""
