"""The measure stage."""
