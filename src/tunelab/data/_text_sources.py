"""Text sources: a folder of ``.txt`` files, one sub-folder per class; and the quotations of the Debian
``fortunes`` package, labelled by topic."""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tunelab.data._hints import did_you_mean, listing
from tunelab.data._images import IMAGE_SUFFIXES
from tunelab.data._text_features import clean_text
from tunelab.errors import DataError

__all__ = ["FORTUNES_DIRECTORY", "FORTUNE_TOPICS", "is_text_folder", "read_fortunes", "read_text_folder"]

FORTUNES_DIRECTORY = Path("/usr/share/games/fortunes")
# Eight subjects that a reader tells apart by their words, each with about 150 or more quotations (fortunes
# 1:1.99.1: computers 1050 ... sports 147). Left out: general topics (people, wisdom, work, platitudes,
# miscellaneous, cookie), ones that overlap a chosen one (linux and perl ~ computers, men-women ~ love,
# drugs ~ medicine), and small ones (medicine 74, pets 52).
FORTUNE_TOPICS = ("computers", "science", "politics", "law", "education", "food", "love", "sports")

_TEXT_SUFFIX = ".txt"
_SHOWN_FILES = 5


def is_text_folder(directory: Path) -> bool:
    """Whether ``directory`` has class sub-folders holding ``.txt`` files and no image files (so a folder
    source can be told from an image folder)."""
    if not directory.is_dir():
        return False
    has_text = False
    for folder in _class_folders(directory):
        for path in _files(folder):
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                return False
            has_text = has_text or suffix == _TEXT_SUFFIX
    return has_text


def read_text_folder(directory: Path, *, encoding: str = "utf-8") -> tuple[pd.DataFrame, list[str]]:
    """One row per ``.txt`` file of ``directory/<class>/``: columns ``text`` (the file's content) and
    ``label`` (the sub-folder's name), sorted by label and file name; and notices.

    Empty files (nothing but whitespace) are dropped; other files are ignored; both with a notice.
    """
    if not directory.is_dir():
        raise DataError(
            f"text folder {directory} does not exist or is not a folder. Expected one sub-folder per class "
            f"holding .txt files, e.g. {directory}/spam/1.txt and {directory}/ham/2.txt."
        )
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}. Fix: use e.g. encoding: utf-8 or encoding: latin-1."
        ) from None
    # A byte-order mark is not part of the text.
    decode_as = "utf-8-sig" if codec == "utf-8" else encoding
    folders = _class_folders(directory)
    if not folders:
        raise DataError(
            f"text folder {directory} has no class sub-folders. Expected one sub-folder per class holding "
            f".txt files, e.g. {directory}/spam/1.txt and {directory}/ham/2.txt."
        )
    texts: list[str] = []
    labels: list[str] = []
    undecodable: list[str] = []
    n_undecodable = n_empty = n_other = 0
    for folder in folders:
        files = _files(folder)
        paths = [path for path in files if path.suffix.lower() == _TEXT_SUFFIX]
        n_other += len(files) - len(paths)
        for path in paths:
            data = path.read_bytes()
            try:
                text = data.decode(decode_as)
            except UnicodeDecodeError as error:
                n_undecodable += 1
                if len(undecodable) < _SHOWN_FILES:
                    undecodable.append(f"{path} (byte offset {error.start}: 0x{data[error.start]:02x})")
                continue
            if not clean_text(text):
                n_empty += 1
                continue
            texts.append(text)
            labels.append(folder.name)
    if n_undecodable:
        more = f" and {n_undecodable - len(undecodable)} more" if n_undecodable > len(undecodable) else ""
        raise DataError(
            f"{n_undecodable} file(s) of {directory} are not valid {encoding} text: "
            f"{'; '.join(undecodable)}{more}. Fix: set the encoding in the data spec (e.g. encoding: latin-1 "
            f"for Western European files), or re-save the files as UTF-8."
        )
    if not texts:
        found = "only empty .txt files" if n_empty else "no .txt files"
        raise DataError(
            f"text folder {directory} has {found} in its sub-folders {listing(f.name for f in folders)}. "
            f"Expected one sub-folder per class holding .txt files (one sample per file) with text in them."
        )
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(
            f"text folder {directory} has texts of one class only ({listing(classes)}); a classifier needs "
            "at least 2. Fix: add a sub-folder of .txt files for each other class."
        )
    notices = [f"{len(texts)} texts of {len(classes)} classes read from {directory.name}"]
    if n_empty:
        notices.append(f"{n_empty} empty .txt file(s) were dropped")
    if n_other:
        notices.append(f"{n_other} file(s) without the .txt suffix were ignored")
    return pd.DataFrame({"text": texts, "label": labels}), notices


def read_fortunes(
    topics: Sequence[str] | None = None, *, directory: Path = FORTUNES_DIRECTORY, min_chars: int = 1
) -> pd.DataFrame:
    """The quotations of the ``fortunes`` topics (default ``FORTUNE_TOPICS``) as columns ``text`` and
    ``topic``, in topic then file order.

    Texts are cleaned (overstriking, control characters, whitespace collapsed to single spaces); those shorter
    than ``min_chars`` are dropped, and so are repeats of a text already read (within or across topics: the
    first one read is kept), so that no quotation is in both a training and a test part.
    """
    if not directory.is_dir():
        raise DataError(
            f"the fortunes quotations are not installed (no folder {directory}). "
            "Fix: sudo apt-get install fortunes"
        )
    available = sorted(
        path.name
        for path in directory.iterdir()
        if path.is_file() and path.suffix not in {".dat", ".u8"} and not path.name.startswith(".")
    )
    chosen = list(FORTUNE_TOPICS if topics is None else topics)
    for topic in chosen:
        if topic not in available:
            raise DataError(
                f"unknown fortunes topic {topic!r}.{did_you_mean(topic, available)} Available topics: "
                f"{listing(available, limit=100)}."
            )
    if not chosen:
        raise DataError(f"no fortunes topics were given. Available topics: {listing(available, limit=100)}.")
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for topic in chosen:
        for text in _quotations(directory, topic):
            if len(text) >= min_chars and text not in seen:
                seen.add(text)
                rows.append((text, topic))
    return pd.DataFrame(rows, columns=["text", "topic"])


def _class_folders(directory: Path) -> list[Path]:
    return sorted(entry for entry in directory.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


def _quotations(directory: Path, topic: str) -> list[str]:
    """A topic file's cleaned quotations (split at lines holding only ``%``), the UTF-8 ``.u8`` file where
    there is one (Debian's are links to the same file, all valid UTF-8)."""
    path = directory / f"{topic}.u8"
    if not path.is_file():
        path = directory / topic
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"fortunes file {path} is not valid UTF-8 (byte {error.start}). "
            "Fix: reinstall the package: sudo apt-get install --reinstall fortunes"
        ) from error
    entries: list[list[str]] = [[]]
    for line in text.split("\n"):
        if line.rstrip("\r") == "%":
            entries.append([])
        else:
            entries[-1].append(line)
    cleaned = (clean_text(_repair_mojibake("\n".join(lines))) for lines in entries)
    return [entry for entry in cleaned if entry]


# A Latin-1 letter that starts a UTF-8 sequence followed by one in the continuation range: UTF-8 bytes
# decoded as Latin-1 (some quotations hold "donâ\x80\x99t", even twice encoded "donÃ¢Â\x80Â\x99t").
_MOJIBAKE = re.compile("[\xc2-\xf4][\x80-\xbf]")


def _repair_mojibake(text: str) -> str:
    """``text`` with UTF-8 that was read as Latin-1 decoded again (at most three times); as it is when it
    does not read back as valid UTF-8."""
    for _ in range(3):
        if not _MOJIBAKE.search(text):
            break
        try:
            text = text.encode("latin-1").decode("utf-8")
        except UnicodeError:
            break
    return text
