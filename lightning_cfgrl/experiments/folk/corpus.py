"""Parse music21-readable files (ABC, MusicXML, MIDI, ...) into monophonic tunes: notes on a sixteenth
grid plus the metadata that prompts are made of (collection, meter, mode).

Needs the optional extra ``music`` (``pip install "lightning-cfgrl[music]"``, i.e. music21). Nothing
here downloads: the Essen folksong collection is read from the user's installed music21 corpus.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Semitones from the key signature's major tonic to the tune's last note -> mode label. Essen's ABC
# ``K:`` field gives the signature (its tonic is nearly always major), so the final note is what tells
# a tune in major (ends on do) from one in minor (ends on la); other finals (re, sol, ... in the Chinese
# pentatonic songs) are "modal".
MODE_BY_FINAL = {0: "major", 9: "minor"}
STEPS_PER_QUARTER = 4  # the frame rate: sixteenth notes


@dataclass
class Tune:
    """One monophonic tune. ``notes`` holds ``(onset, duration, midi)`` in sixteenths from the first full
    bar (a pickup is dropped so frame 0 is a downbeat); ``midi`` -1 is a rest."""

    collection: str
    meter: str  # "2/4", "6/8", ... or "none"
    mode: str  # "major", "minor", "modal"
    tonic: int  # pitch class of the key signature's major tonic
    title: str
    source: str  # file name and index in it
    notes: list[tuple[int, int, int]] = field(default_factory=list)


def require_music21():
    try:
        import music21
    except ImportError as error:  # the optional extra
        raise ImportError(
            "the folk-tune domain needs music21: pip install 'lightning-cfgrl[music]' (or pip install music21)"
        ) from error
    return music21


def essen_files(collections: Sequence[str] | None = None) -> list[Path]:
    """The Essen folksong ABC files of the installed music21 corpus (``collections`` filters by file stem,
    e.g. ``["han1", "lux"]``); the test and variant files are left out."""
    music21 = require_music21()
    root = Path(music21.__file__).parent / "corpus" / "essenFolksong"
    files = sorted(p for p in root.glob("*.abc") if not re.match(r"(test|variant)", p.stem))
    if not files:
        raise FileNotFoundError(
            f"no Essen ABC files under {root}: this music21 install has no corpus; reinstall music21 from "
            "the package index (its wheel ships the corpus)"
        )
    if collections is not None:
        known = {p.stem for p in files}
        unknown = sorted(set(collections) - known)
        if unknown:
            raise ValueError(
                f"unknown Essen collection(s) {unknown}; expected file stems among {sorted(known)}"
            )
        files = [p for p in files if p.stem in set(collections)]
    return files


def collection_of(path: Path) -> str:
    """A multi-tune file's collection: its stem without trailing digits ("erk10" -> "erk", "han2" -> "han").
    A file holding one tune belongs to its folder's collection (a folder of single-tune files)."""
    return re.sub(r"\d+$", "", path.stem) or path.stem


def parse_files(paths: Sequence[str | Path]) -> list[Tune]:
    """Every tune of every file (a multi-tune ABC file is an opus); files music21 cannot read raise with
    the file's name. Tunes that are not monophonic keep their top voice."""
    tunes = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(
                f"corpus file {path} does not exist; pass existing ABC/MusicXML/MIDI files"
            )
        tunes.extend(_parse_file(path))
    return tunes


def _parse_file(path: Path) -> Iterator[Tune]:
    music21 = require_music21()
    try:
        parsed = music21.converter.parse(str(path))
    except Exception as error:  # music21 raises many types; name the file
        raise ValueError(f"music21 could not read {path}: {error}") from error
    scores = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
    collection = collection_of(path) if len(scores) > 1 else path.parent.name
    for index, score in enumerate(scores):
        tune = _tune(score, collection, f"{path.name}#{index}")
        if tune is not None:
            yield tune


def _tune(score, collection: str, source: str) -> Tune | None:
    music21 = require_music21()
    part = score.parts[0] if score.parts else score
    flat = part.flatten()
    signatures = flat.getElementsByClass(music21.meter.TimeSignature)
    meter = signatures[0].ratioString if signatures else "none"
    keys = flat.getElementsByClass(music21.key.KeySignature)
    tonic = keys[0].asKey("major").tonic.pitchClass if keys else 0
    measures = part.getElementsByClass(music21.stream.Measure)
    start = 0.0
    if signatures and len(measures) > 1:
        bar = signatures[0].barDuration.quarterLength
        if measures[0].duration.quarterLength < bar - 1e-6:  # a pickup: start at the first full bar
            start = float(measures[1].offset)
    notes: list[tuple[int, int, int]] = []
    for element in flat.notesAndRests:
        length = round(float(element.duration.quarterLength) * STEPS_PER_QUARTER)
        onset = round((float(element.offset) - start) * STEPS_PER_QUARTER)
        if length <= 0 or onset < 0:  # grace notes; the dropped pickup
            continue
        if element.isRest:
            midi = -1
        else:
            pitches = element.pitches
            midi = max(p.midi for p in pitches)
        tie = getattr(element, "tie", None)
        if notes and tie is not None and tie.type in ("continue", "stop") and notes[-1][2] == midi:
            on, du, mi = notes[-1]
            notes[-1] = (on, onset + length - on, mi)  # a tied continuation lengthens the note
            continue
        notes.append((onset, length, midi))
    pitched = [n for n in notes if n[2] >= 0]
    if not pitched:
        return None
    final = (pitched[-1][2] - tonic) % 12
    title = score.metadata.title if score.metadata is not None and score.metadata.title else ""
    return Tune(collection, meter, MODE_BY_FINAL.get(final, "modal"), tonic, title, source, notes)


__all__ = [
    "MODE_BY_FINAL",
    "STEPS_PER_QUARTER",
    "Tune",
    "collection_of",
    "essen_files",
    "parse_files",
    "require_music21",
]
