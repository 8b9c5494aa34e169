"""The one exception type users see as a single clear line."""


class Tf3dganError(Exception):
    """An error caused by the user's input or files (not a bug).

    Tools print ``error: <message>`` and exit with status 2; the message must name
    the file or setting at fault and say what is wrong with it.
    """


class DataError(Tf3dganError):
    """A voxel file, folder or dataset spec that cannot be used."""


class CheckpointError(Tf3dganError):
    """A checkpoint that is missing, corrupt or does not fit the run."""
