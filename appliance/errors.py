"""One rooted exception hierarchy; each member also subclasses the matching built-in."""


class ApplianceError(Exception):
    """Base of every error the appliance reports to a user in one line."""


class UsageError(ApplianceError, ValueError):
    """A name, value or option the user gave is not one we accept."""


class SourceMissingError(ApplianceError, FileNotFoundError):
    """A model source (package, directory, file) is not present."""


class CorruptModelError(ApplianceError, ValueError):
    """A model file or source is truncated, malformed or fails its checksum."""


class ModelWriteError(ApplianceError, OSError):
    """A model could not be written (disk full, directory not writable)."""


class AudioError(ApplianceError, ValueError):
    """An audio file or buffer is missing, unreadable, empty, not audio, or too long."""
