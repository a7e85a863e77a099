"""Pure simulation logic: the SimPy engine, distributions, costs, queueing theory, planner."""
