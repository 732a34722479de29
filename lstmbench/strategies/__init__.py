"""The strategies stage."""
