"""The shipped benchmark suites, as package data (imgbench.suites); see imgbench.resources."""
