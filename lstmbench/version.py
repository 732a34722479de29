"""The package version, apart from the package's __init__ so that any module can read it without importing
the package (which imports records and suite) back."""
__version__ = "0.1.0"
