"""Domain errors. The library raises these; only the CLI turns them into one line and an exit code."""

from __future__ import annotations


class GenPropError(Exception):
    """Base class of every error the user can fix; carries the CLI exit code."""

    exit_code = 1


class OptionError(GenPropError):
    """An option value breaks a rule (chunk size, overlap, device, dtype...)."""

    exit_code = 2


class InputError(GenPropError):
    """The input video or the edited first frame cannot be used."""

    exit_code = 3


class VideoReadError(InputError):
    """The input is missing, is not a video, has no video stream, is corrupt or has no frames."""


class ImageReadError(InputError):
    """The edited first frame cannot be read."""


class FrameSizeError(InputError):
    """The edited first frame does not match the video's size or aspect ratio."""


class OutputError(GenPropError):
    """The output cannot be written where it was asked (exists, folder missing, same as input)."""

    exit_code = 4


class WeightsError(GenPropError):
    """A variant is unknown, its files are missing or unpublished, or a file fails its checksum."""

    exit_code = 5


class UnknownVariantError(WeightsError):
    """No variant of that name in weights.toml."""


class AdapterUnavailableError(WeightsError):
    """The variant has no published SCE/MPD adapter weights."""


class ChecksumMismatchError(WeightsError):
    """A weights file's sha256 differs from the one pinned in the registry."""


class DeviceError(GenPropError):
    """The requested device is unavailable or ran out of memory."""

    exit_code = 6
