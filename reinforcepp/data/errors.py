"""The error of bad data."""


class DataError(ValueError):
    """Bad prompt data; the message names the file and line (or row) and the column."""
