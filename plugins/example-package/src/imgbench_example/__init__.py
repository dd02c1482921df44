"""An example imgbench plugin package (see plugin.py)."""
