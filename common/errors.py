"""Exception types for a user's mistakes.

Everything derived from :class:`StudyError` is a problem the user can fix (a wrong
path, a bad data set, a bad config). The command line prints its message as one line
and exits with status 2 (an arm's process that crashed is reported by
:class:`experiments.units.UnitsFailed`, exit status 1); anything else is a bug and keeps
its traceback.
"""


class StudyError(Exception):
    """A user's mistake: reported as one line, exit status 2."""


class ConfigError(StudyError):
    """The configuration file or a flag is invalid."""


class DataError(StudyError):
    """The data set cannot be used as given."""


class DataNotFoundError(DataError):
    """The data path does not exist."""


class NotADirectoryDataError(DataError):
    """The data path is a file, not a folder."""


class NoClassesError(DataError):
    """The data folder holds no class folders."""


class TooFewClassesError(DataError):
    """The data set holds fewer than two classes: nothing to classify."""


class EmptyClassError(DataError):
    """A class folder holds no usable image."""


class ClassMismatchError(DataError):
    """The split folders (train/ and test/) do not hold the same classes."""


class TooFewImagesError(DataError):
    """A class has too few images to be split in a stratified way."""


class NotAStudyError(StudyError):
    """A folder opened as a study's output folder that no study wrote."""


class UnavailableError(StudyError):
    """A part of a study that its folder does not hold (a model's maps, the explained images),
    or that is not finished yet; the message says which part and why."""


class ChoiceError(StudyError, ValueError):
    """An argument of the study's Python API that names what the study does not hold (an arm,
    a method, an image, a class, a figure or a setting); the message lists what it holds."""
