"""Power-loss crash states of the tract store and the durable-file helper (issue 11); see test_powerloss.py."""
