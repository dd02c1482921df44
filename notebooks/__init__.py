"""The shipped notebooks, as package data (imgbench.notebooks); see imgbench.resources."""
