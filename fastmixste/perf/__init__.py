"""Performance accounting without a GPU: op/byte/FLOP counters, the roofline model's inputs, memory of a step."""
