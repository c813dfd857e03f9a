"""Files and the command line: atomic writes and input budgets, the allowlisted checkpoint reader, CLI plumbing."""
