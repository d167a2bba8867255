"""Text sources: folders of .txt files per class, and the fortunes quotations by topic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tunelab.data._text_sources import FORTUNE_TOPICS, is_text_folder, read_fortunes, read_text_folder
from tunelab.errors import DataError

FORTUNES = Path("/usr/share/games/fortunes")
needs_fortunes = pytest.mark.skipif(
    not FORTUNES.is_dir(),
    reason="needs the Debian fortunes quotations in /usr/share/games/fortunes (apt-get install fortunes)",
)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.fixture
def text_folder(tmp_path: Path) -> Path:
    root = tmp_path / "reviews"
    _write(root / "pos" / "b.txt", "Loved it.\nWould watch again.")
    _write(root / "pos" / "a.txt", "Great film!")
    _write(root / "neg" / "c.txt", "Dull.")
    _write(root / "neg" / "d.txt", "Too long, too loud.")
    return root


def test_read_text_folder(text_folder):
    frame, notices = read_text_folder(text_folder)
    assert list(frame.columns) == ["text", "label"]
    assert frame["label"].tolist() == ["neg", "neg", "pos", "pos"]  # by label, then by file name
    assert frame["text"].tolist() == [
        "Dull.",
        "Too long, too loud.",
        "Great film!",
        "Loved it.\nWould watch again.",
    ]
    assert notices == ["4 texts of 2 classes read from reviews"]
    assert is_text_folder(text_folder)


def test_empty_files_are_dropped_and_other_files_ignored(text_folder):
    _write(text_folder / "neg" / "empty.txt", "")
    _write(text_folder / "pos" / "blank.txt", " \n\t\n")
    _write(text_folder / "pos" / "notes.md", "not a sample")
    _write(text_folder / "pos" / ".hidden.txt", "not a sample either")
    _write(text_folder / "bom" / "x.txt", "with a byte-order mark".encode("utf-8-sig"))
    frame, notices = read_text_folder(text_folder)
    assert len(frame) == 5
    assert "2 empty .txt file(s) were dropped" in notices
    assert "1 file(s) without the .txt suffix were ignored" in notices
    assert frame.loc[frame["label"] == "bom", "text"].tolist() == ["with a byte-order mark"]


def test_a_latin1_file_is_an_encoding_error_unless_the_encoding_says_so(text_folder):
    _write(text_folder / "pos" / "latin.txt", "Un très bon café".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt \(byte offset 5: 0xe8\).*encoding: latin-1") as error:
        read_text_folder(text_folder)
    assert "not valid utf-8" in str(error.value)
    assert "re-save the files as UTF-8" in str(error.value)
    frame, _ = read_text_folder(text_folder, encoding="latin-1")
    assert "Un très bon café" in frame["text"].tolist()


def test_encoding_errors_list_at_most_five_files(text_folder):
    for index in range(7):
        _write(text_folder / "neg" / f"bad{index}.txt", b"caf\xe9")
    with pytest.raises(DataError, match=r"7 file\(s\) of .* and 2 more") as error:
        read_text_folder(text_folder)
    assert str(error.value).count("(byte offset 3: 0xe9)") == 5


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, "has no class sub-folders"),
        ({"flat.txt": "x"}, "has no class sub-folders"),
        ({"pos/readme.md": "x", "neg/readme.md": "x"}, "has no .txt files"),
        ({"pos/a.txt": "", "neg/b.txt": "  "}, "has only empty .txt files"),
        ({"pos/a.txt": "good", "pos/b.txt": "fine", "neg/c.txt": ""}, "one class only .'pos'."),
    ],
)
def test_text_folder_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    root.mkdir()
    for name, content in layout.items():
        _write(root / name, content)
    with pytest.raises(DataError, match=message):
        read_text_folder(root)


def test_a_missing_folder_or_unknown_encoding_is_an_error(tmp_path, text_folder):
    with pytest.raises(DataError, match="does not exist"):
        read_text_folder(tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown text encoding 'klingon'"):
        read_text_folder(text_folder, encoding="klingon")


def test_is_text_folder_tells_text_from_images(tmp_path, text_folder):
    assert not is_text_folder(tmp_path / "nowhere")
    flat = tmp_path / "flat"
    _write(flat / "a.txt", "text without a class folder")
    assert not is_text_folder(flat)
    images = tmp_path / "images"
    _write(images / "cat" / "1.png", b"\x89PNG")
    _write(images / "cat" / "labels.txt", "a text file among images")
    assert not is_text_folder(images)
    _write(text_folder / "pos" / "poster.JPG", b"\xff\xd8")
    assert not is_text_folder(text_folder)


def _topic(directory: Path, name: str, entries: list[str], *, suffix: str = "") -> None:
    _write(directory / f"{name}{suffix}", "".join(f"{entry}\n%\n" for entry in entries))


def test_read_fortunes_parses_cleans_and_deduplicates(tmp_path):
    directory = tmp_path / "fortunes"
    _topic(directory, "cats", ["The cat\nsat.\n\t\t-- Anon", "_\bb_\bo_\bl_\bd\x07 claim", "Meow.", "Meow."])
    _topic(directory, "dogs", ["Woof.", "   ", "Meow.", "Dogs don\u00e2\u0080\u0099t meow."])
    _topic(directory, "dogs", ["stale plain file"])
    _topic(directory, "dogs", ["Woof.", "   ", "Meow.", "Dogs don\u00e2\u0080\u0099t meow."], suffix=".u8")
    _write(directory / "cats.dat", b"\x00\x00\x00\x02binary index")
    frame = read_fortunes(["cats", "dogs"], directory=directory)
    assert list(frame.columns) == ["text", "topic"]
    assert frame.to_dict("records") == [
        {"text": "The cat sat. -- Anon", "topic": "cats"},
        {"text": "bold claim", "topic": "cats"},
        {"text": "Meow.", "topic": "cats"},
        {"text": "Woof.", "topic": "dogs"},
        {"text": "Dogs don’t meow.", "topic": "dogs"},  # UTF-8 read as Latin-1, repaired
    ]
    assert read_fortunes(["cats"], directory=directory, min_chars=6)["text"].tolist() == [
        "The cat sat. -- Anon",
        "bold claim",
    ]
    with pytest.raises(
        DataError, match=r"unknown fortunes topic 'dog'\. Did you mean 'dogs'\?.*'cats', 'dogs'"
    ):
        read_fortunes(["dog"], directory=directory)


def test_read_fortunes_without_the_package(tmp_path):
    with pytest.raises(DataError, match="apt-get install fortunes"):
        read_fortunes(directory=tmp_path / "games" / "fortunes")


@needs_fortunes
def test_default_fortune_topics():
    frame = read_fortunes()
    assert len(FORTUNE_TOPICS) >= 6
    counts = frame["topic"].value_counts()
    assert set(counts.index) == set(FORTUNE_TOPICS)
    assert counts.min() >= 140
    assert len(frame) > 3000
    assert not frame["text"].duplicated().any()  # not within, not across topics
    assert not frame["text"].str.contains(CONTROL).any()
    assert (frame["text"] == frame["text"].str.strip()).all()
    assert (frame["text"].str.len() > 0).all()
    # Filed under politics and law (read in that order): kept once, under politics; filed twice under law:
    # kept once.
    assert frame.loc[
        frame["text"].str.startswith("Good government never depends upon laws"), "topic"
    ].tolist() == ["politics"]
    assert frame["text"].str.startswith("A Los Angeles judge ruled that").sum() == 1
    assert len(read_fortunes(["law"])) > counts["law"]
    with pytest.raises(DataError, match="Did you mean 'computers'"):
        read_fortunes(["computer"])
