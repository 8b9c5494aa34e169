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


def numpy_load_reason(exc: Exception) -> str:
    """Why ``np.load(..., allow_pickle=False)`` failed, in words for a user.

    NumPy takes any file without the .npy/.npz signature for a pickle and says "load it
    unsafely with allow_pickle" — the wrong advice for a damaged or foreign file."""
    text = str(exc)
    if isinstance(exc, ValueError) and ("Object arrays" in text or "Python objects" in text):
        return "holds an array of Python objects, not numbers (refused: loading it would run pickle)"
    if isinstance(exc, ValueError) and "pickled" in text:   # NumPy 2: "contains pickled", 1.x: "containing pickled"
        return "not a NumPy .npy/.npz file (no NumPy or zip signature: damaged, or another kind of file)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
