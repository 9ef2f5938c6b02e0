"""Where pretraining documents come from, one at a time: text files (paths, folders, globs) or a TensorFlow
Datasets text split. Each source gives a process its own share of the documents, so the processes of a
multi-host run read disjoint shards, and never holds the corpus as a list.

Files: plain text (`.gz` read as gzip); a file holds one document, or several separated by blank lines.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from flaxtrain.errors import FlaxtrainError

OPEN_FILES = 4  # files read at once, one document from each in turn


def expand_files(files: str | Path | Sequence[str | Path], what: str) -> list[str]:
    """Paths of a path, a glob or a list of them (folders give the files inside), each checked."""
    given = [files] if isinstance(files, (str, Path)) else list(files)
    if not given:
        raise FlaxtrainError(f"{what} is empty: pass a text file, a folder, a glob or a list of them")
    out: list[str] = []
    for item in given:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            found = [str(path)]
        else:
            found = sorted(glob.glob(str(item), recursive=True))
        if not found:
            raise FlaxtrainError(f"{what}: {item} matches no file: pass an existing text file, folder or glob")
        out.extend(found)
    return out


def read_documents(path: str) -> Iterator[str]:
    """The documents of one file, one at a time: blocks of lines separated by blank lines."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as raw:
            lines: list[str] = []
            for line in io.TextIOWrapper(raw, encoding="utf-8", errors="replace"):
                if line.strip():
                    lines.append(line.strip())
                elif lines:
                    yield " ".join(lines)
                    lines = []
            if lines:
                yield " ".join(lines)
    except (OSError, EOFError) as err:
        raise FlaxtrainError(f"cannot read {path} ({err}): pass plain text or gzip files") from None


def interleaved_documents(files: Sequence[str], process_index: int = 0, process_count: int = 1,
                          limit: int | None = None) -> Iterator[str]:
    """Documents of `files`, OPEN_FILES files at a time in turn; this process's every process_count-th one
    (of the first `limit` documents, when given)."""
    pending = list(files)
    active: list[Iterator[str]] = []
    count = 0
    while (pending or active) and (limit is None or count < limit):
        while pending and len(active) < OPEN_FILES:
            active.append(read_documents(pending.pop(0)))
        for reader in list(active):
            document = next(reader, None)
            if document is None:
                active.remove(reader)
                continue
            if count % process_count == process_index:
                yield document
            count += 1


@dataclasses.dataclass(frozen=True)
class TextFiles:
    """Documents of text files, interleaved; process i of n keeps every n-th document from the i-th."""

    paths: tuple[str, ...]

    @classmethod
    def of(cls, files: str | Path | Sequence[str | Path], what: str) -> TextFiles:
        return cls(tuple(expand_files(files, what)))

    def documents(self, process_index: int = 0, process_count: int = 1, limit: int | None = None) -> Iterator[str]:
        return interleaved_documents(self.paths, process_index, process_count, limit)

    def __str__(self) -> str:
        return f"{len(self.paths)} file(s)"


@dataclasses.dataclass(frozen=True)
class TfdsText:
    """Documents of one text feature of a TensorFlow Datasets split, read from its prepared files in
    order; process i of n reads the i-th of n even sub-splits (TFDS's `even_splits`)."""

    name: str
    split: str
    data_dir: str | None
    text_key: str

    @classmethod
    def of(cls, name: str, split: str, data_dir: str | None = None, text_key: str | None = None,
           download: bool = False) -> TfdsText:
        """The source, checked now: the dataset is prepared (or downloaded with `download=True`), the split
        exists, and `text_key` names a text feature (found alone when None)."""
        import tensorflow_datasets as tfds

        where = data_dir or "TensorFlow Datasets' default data_dir"
        try:
            builder = tfds.builder(name, data_dir=data_dir)
            if download:
                builder.download_and_prepare()
        except Exception as err:  # TFDS raises many types (unknown name, missing files, download) for one cause
            detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise FlaxtrainError(f"TFDS dataset {name!r} cannot be read from {where} ({detail}): prepare it with "
                                 f"`tfds build {name} --data_dir DIR` and pass data_dir=DIR, or download=True") from None
        if not builder.is_prepared():
            raise FlaxtrainError(f"TFDS dataset {name!r} is not prepared in {where}: pass download=True, or prepare it "
                                 f"with `tfds build {name} --data_dir DIR` and pass data_dir=DIR")
        base = split.split("[")[0]
        if base not in builder.info.splits:
            raise FlaxtrainError(f"TFDS dataset {name!r} has no split {base!r}: use one of {', '.join(builder.info.splits)}")
        texts = sorted(k for k, f in builder.info.features.items() if isinstance(f, tfds.features.Text))
        if text_key is None:
            if len(texts) != 1:
                raise FlaxtrainError(f"TFDS dataset {name!r} has {len(texts)} text features ({', '.join(texts) or 'none'}): "
                                     "pass text_key= naming the one that holds the documents")
            text_key = texts[0]
        elif text_key not in texts:
            raise FlaxtrainError(f"TFDS dataset {name!r} has no text feature {text_key!r}: use one of "
                                 f"{', '.join(texts) or '(none: it holds no text)'}")
        return cls(name, split, data_dir, text_key)

    def documents(self, process_index: int = 0, process_count: int = 1, limit: int | None = None) -> Iterator[str]:
        import tensorflow_datasets as tfds

        split = self.split if limit is None else f"{self.split}[:{limit}]"
        if process_count > 1:
            split = tfds.even_splits(split, n=process_count)[process_index]
        ds = tfds.load(self.name, split=split, data_dir=self.data_dir, download=False, shuffle_files=False)
        for example in tfds.as_numpy(ds):
            text = example[self.text_key].decode("utf-8", errors="replace").strip()
            if text:
                yield text

    def __str__(self) -> str:
        return f"TFDS {self.name}:{self.split}"


Documents = TextFiles | TfdsText
