"""A reproduction's report: the paper's numbers, the claims judged from the results, and their rendering."""
