"""The one error type of the data loaders."""


class DataError(ValueError):
    """A data set is missing, corrupt or asked for wrongly; the message says what and where."""
