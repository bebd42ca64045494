"""Reading export files before DuckDB does: finding them, their digest, their header.

Everything here looks at a file's bytes only; nothing touches the warehouse.
"""

import codecs
import csv
import gzip
import hashlib
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

PANOPTES_COLUMNS = (
    "classification_id", "user_name", "user_id", "user_ip", "workflow_id", "workflow_name",
    "workflow_version", "created_at", "gold_standard", "expert", "metadata", "annotations",
    "subject_data", "subject_ids",
)  # fmt: skip
TRANSCODED_PREFIX = "transcoded-"  # UTF-8 copies of exports in the scratch folder: raw rows, user_ip included
LINK_PREFIX = "utf8-named-"  # links with a UTF-8 name to an export whose name is not UTF-8


# The widest header read: a Panoptes export has 14 columns; a spreadsheet re-save may add many.
MAX_HEADER_BYTES = 4 * 2**20
MAX_COLUMNS = 20_000


class ExportFormatError(ValueError):
    """A file that is not a Zooniverse classification export."""


def find_exports(root: Path) -> list[Path]:
    """Every `*.csv` and `*.csv.gz` under `root`, in a stable order."""
    if not root.is_dir():
        raise FileNotFoundError(f"Exports folder {root} does not exist (ENGAGEMENT_EXPORTS_DIR).")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz")))


def open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def shown(path: Path | str) -> str:
    """A path as text that can be stored and printed: bytes of a non-UTF-8 file name as \\x.. escapes."""
    return os.fsencode(str(path)).decode("utf-8", errors="backslashreplace")


class LineCounter:
    """Physical lines of a byte stream and the ones longer than a limit, fed chunk by chunk.

    The limit is at least the chunk size, so only a line crossing chunks can
    exceed it. Each chunk costs one vectorized search for its newlines (numpy);
    counts, blank lines and line lengths come from their positions.
    """

    def __init__(self, limit: int):
        self.limit, self.lines, self.partial, self.blank_lines, self.offset = limit, 0, 0, 0, 0
        self.last_newline = -1  # offset of the stream's last newline; one stands before the first line
        self.last_byte = 10  # the stream's last byte
        self.long_lines: list[tuple[int, int, int]] = []  # (line number, byte offset, bytes without its newline)

    def feed(self, chunk: bytes) -> None:
        import numpy as np

        if len(chunk) > self.limit:
            raise ValueError("chunks must not be longer than the line limit")
        if not chunk:
            return
        data = np.frombuffer(chunk, dtype=np.uint8)
        newlines = np.flatnonzero(data == 10)
        if len(newlines) == 0:
            self.partial += len(chunk)
            self.offset += len(chunk)
            self.last_byte = chunk[-1]
            return
        first = int(newlines[0])
        if self.partial + first > self.limit:  # rare: a line DuckDB's reader would drop
            self.long_lines.append((self.lines + 1, self.offset - self.partial, self.partial + first))
        self.blank_lines += self._blank(data, newlines)
        self.lines += len(newlines)
        self.partial = len(chunk) - int(newlines[-1]) - 1
        self.last_newline = self.offset + int(newlines[-1])
        self.offset += len(chunk)
        self.last_byte = chunk[-1]

    def _blank(self, data, newlines) -> int:
        """Empty lines (or a lone \r) ended by the newlines at `newlines` of this chunk: they hold no row."""
        import numpy as np

        previous = np.empty_like(newlines)
        previous[0] = self.last_newline - self.offset  # relative to this chunk: negative
        previous[1:] = newlines[:-1]
        gaps = newlines - previous
        blank = gaps == 1
        two = np.flatnonzero(gaps == 2)
        if len(two):
            before = newlines[two] - 1  # the byte before the newline; -1: the previous chunk's last
            byte_before = np.where(before >= 0, data[np.maximum(before, 0)], self.last_byte)
            blank[two] = byte_before == 13
        return int(np.count_nonzero(blank))

    def finish(self) -> None:
        if self.partial:  # a last line without its newline
            if self.partial > self.limit:
                self.long_lines.append((self.lines + 1, self.offset - self.partial, self.partial))
            self.lines += 1


@dataclass(frozen=True)
class FileScan:
    sha256: str
    lines: int | None  # physical lines, header included; None when a gzip cannot be read to its end
    ends_with_newline: bool
    long_lines: tuple[tuple[int, int, int], ...] = ()  # (line, byte offset, bytes) of lines over the reader's limit
    blank_lines: int = 0  # empty lines: DuckDB skips them (or they are inside a quoted field)
    expanded_bytes: int = 0  # the bytes DuckDB reads: a gzip's decompressed size
    valid_utf8: bool = True  # False: some bytes are not UTF-8 (read as Latin-1, from a copy)


class ExportTooLarge(ExportFormatError):
    """A file (a gzip once decompressed) over the size an ingest may read."""


def scan_file(path: Path, max_line_bytes: int, sha256: str | None = None, max_bytes: int | None = None) -> FileScan:
    """The file's sha256 (of its bytes as stored, unless given), its physical lines, and whether it is UTF-8.

    One streaming pass; two for gzip, whose lines are counted on the
    decompressed bytes, and which is refused as soon as it expands past
    `max_bytes` (nothing is written: the bytes are only counted).
    """
    digest = hashlib.sha256()
    gzipped = path.name.lower().endswith(".gz")
    counter = LineCounter(max_line_bytes)
    utf8 = codecs.getincrementaldecoder("utf-8")("strict")
    valid = True

    def count(chunk: bytes) -> None:
        nonlocal valid
        counter.feed(chunk)
        if max_bytes is not None and counter.offset > max_bytes:
            raise ExportTooLarge(
                f"{shown(path)}: {'expands to' if gzipped else 'is'} over {max_bytes / 2**30:g} GB, more than an "
                "ingest reads (max_export_gb in the ingest's run config); split the export or raise the limit"
            )
        if valid:
            try:
                utf8.decode(chunk)
            except UnicodeDecodeError:
                valid = False

    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
                if not gzipped:
                    count(chunk)
        if gzipped:
            with gzip.open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 22), b""):
                    count(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error):
        # A truncated or corrupt gzip: the load of this file says so (other files still load).
        return FileScan(digest.hexdigest(), None, False)
    except OSError as error:
        raise ExportFormatError(
            f"{shown(path)}: cannot be read ({error.strerror or error}); check the disk and the file's permissions, "
            "then run the ingest again (nothing of this run was stored)"
        ) from error
    counter.finish()
    try:
        utf8.decode(b"", final=True)
    except UnicodeDecodeError:
        valid = False
    return FileScan(
        sha256 or digest.hexdigest(),
        counter.lines,
        counter.partial == 0,
        tuple(counter.long_lines),
        counter.blank_lines,
        counter.offset,
        valid,
    )


def read_lines(path: Path, wanted: list[int], limit: int) -> dict[int, bytes]:
    """The physical lines numbered `wanted` (1 = header), each cut at `limit` bytes, without their newline."""
    import numpy as np

    wanted = sorted(set(wanted))
    found: dict[int, bytes] = {}
    line, next_wanted, pending = 1, 0, None  # line: the number of the line the next chunk starts in
    with open_binary(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            if pending is not None:  # a wanted line that began in an earlier chunk
                end = int(newlines[0]) if len(newlines) else len(chunk)
                pending[1].extend(chunk[: max(0, min(end, limit - len(pending[1])))])
                if len(newlines):
                    found[pending[0]], pending = bytes(pending[1]), None
            while next_wanted < len(wanted) and wanted[next_wanted] <= line + len(newlines):
                k = wanted[next_wanted] - line  # the k-th line starting in this chunk
                if not (k == 0 and wanted[next_wanted] in found):
                    start = 0 if k == 0 else int(newlines[k - 1]) + 1
                    if k < len(newlines):
                        found[wanted[next_wanted]] = chunk[start : min(int(newlines[k]), start + limit)]
                    else:
                        pending = (wanted[next_wanted], bytearray(chunk[start : start + limit]))
                next_wanted += 1
            line += len(newlines)
    if pending is not None:
        found[pending[0]] = bytes(pending[1])
    return found


UTF16_BOMS = {codecs.BOM_UTF16_LE: "utf-16-le", codecs.BOM_UTF16_BE: "utf-16-be"}


def detect_encoding(head: bytes) -> str:
    """'utf-8' (with or without a BOM; other bytes are repaired later), 'utf-16-le' or 'utf-16-be'."""
    for bom, encoding in UTF16_BOMS.items():
        if head.startswith(bom):
            return encoding
    sample = head[:4096]
    if len(sample) >= 8:  # UTF-16 without a BOM: ASCII text has a NUL in every other byte
        if sample[1::2].count(0) > 0.9 * len(sample[1::2]) and sample[0::2].count(0) < 0.1 * len(sample[0::2]):
            return "utf-16-le"
        if sample[0::2].count(0) > 0.9 * len(sample[0::2]) and sample[1::2].count(0) < 0.1 * len(sample[1::2]):
            return "utf-16-be"
    return "utf-8"


def _binary_kind(head: bytes) -> str | None:
    """What a non-text file is, or None for text (one stray NUL or control byte does not make a file binary)."""
    if head.startswith(b"PK\x03\x04"):
        return "binary content (a zip archive renamed .csv): unzip it and put the CSV inside into the exports folder"
    if head.startswith(b"\x1f\x8b"):
        return "binary content (gzip-compressed, in a file named .csv): rename it to end in .csv.gz (or gunzip it)"
    # Text may hold a stray NUL or control byte, and a Latin-1 file some bytes that are not
    # UTF-8; a binary file has NULs throughout, or is mostly not UTF-8.
    not_utf8 = len(head) - len(head.decode("utf-8", errors="ignore").encode("utf-8"))
    if (head.count(0) > 8 and head.count(0) > len(head) // 1000) or not_utf8 > len(head) // 10:
        return "binary content, not a CSV export (a spreadsheet or another file renamed .csv?)"
    return None


def read_header(path: Path) -> tuple[list[str], str]:
    """The export's column names, normalized, and its encoding; raises ExportFormatError when it is no CSV export."""
    try:
        with open_binary(path) as handle:
            head = handle.read(64 * 1024)
            if b"\n" not in head and not detect_encoding(head).startswith("utf-16"):
                head += handle.read(MAX_HEADER_BYTES + 1 - len(head))  # a wide header: read it whole
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ExportFormatError(
            f"{shown(path)}: cannot be read as an export ({error}); download it again or remove it"
        ) from None
    encoding = detect_encoding(head)
    text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    if not text.strip():
        raise ExportFormatError(
            f"{shown(path)}: the file is empty; expected a classification export with a header line "
            "(download it again or remove it)"
        )
    kind = _binary_kind(head) if encoding == "utf-8" else None
    if kind:
        raise ExportFormatError(f"{shown(path)}: {kind}")
    first_line = text.splitlines()[0]
    if len(first_line.encode("utf-8", errors="replace")) > MAX_HEADER_BYTES or first_line.count(",") >= MAX_COLUMNS:
        raise ExportFormatError(
            f"{shown(path)}: the header line is over {MAX_HEADER_BYTES // 2**20} MB or {MAX_COLUMNS:,} columns, "
            "more than an export may have; is it a classification export?"
        )
    return [name.strip().lower() for name in next(csv.reader([first_line]))], encoding


def check_header(path: Path, header: list[str]) -> None:
    """Raise ExportFormatError naming the file and what is missing."""
    missing = [c for c in ("classification_id", "created_at") if c not in header]
    if "user_id" not in header and "user_name" not in header:
        missing.append("user_id or user_name")
    if missing:
        hint = ""
        if len(header) == 1 and any(d in header[0] for d in ";\t|"):
            hint = " (the header has one column: is the delimiter not a comma?)"
        # Never echo the first line itself: in a file without a header it is a volunteer's row.
        known = [c for c in header if c in PANOPTES_COLUMNS]
        raise ExportFormatError(
            f"{shown(path)}: not a Zooniverse classification export: missing column(s) "
            f"{', '.join(missing)}{hint}; its first line has {len(header)} field(s), "
            f"known export columns among them: {', '.join(known) or 'none'}. Export the classifications "
            "(not subjects or workflows) from the project's Data Exports page, or move this file out of the folder"
        )
    duplicated = sorted({c for c in header if c in PANOPTES_COLUMNS and header.count(c) > 1})
    if duplicated:
        raise ExportFormatError(
            f"{shown(path)}: column(s) {', '.join(duplicated)} appear more than once in the header; "
            "remove the extra column(s) and run the ingest again"
        )


def staged_columns(header: list[str]) -> dict[str, str]:
    """read_csv's `columns`: a known Panoptes column keeps its name, anything else becomes extra_<i>.

    Column names from the file never reach SQL text: they travel as this
    struct, a parameter.
    """
    return {(name if name in PANOPTES_COLUMNS else f"extra_{i}"): "VARCHAR" for i, name in enumerate(header)}


def transcode_to_utf8(path: Path, folder: Path, encoding: str) -> Path:
    """A UTF-8 copy of `path`, streamed in chunks.

    UTF-16 is decoded as such; in a UTF-8 file every valid sequence is kept as
    it is (so its names hash as before) and each other byte is read as Latin-1
    (Windows exports), never replaced by U+FFFD: two names that differ in one
    byte stay two volunteers.
    """
    handle, target = tempfile.mkstemp(prefix=TRANSCODED_PREFIX, suffix=".csv", dir=folder)
    # An undecodable byte b becomes U+DC00+b (surrogateescape), then U+00b: one C pass each, not a
    # Python call per byte (100 MB of junk took 55 s that way).
    errors = "replace" if encoding.startswith("utf-16") else "surrogateescape"
    decoder = codecs.getincrementaldecoder(encoding)(errors=errors)
    with open_binary(path) as source, os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
        for chunk in iter(lambda: source.read(1 << 22), b""):
            out.write(decoder.decode(chunk).translate(_LATIN1_FOR_ESCAPES))
        out.write(decoder.decode(b"", final=True).translate(_LATIN1_FOR_ESCAPES))
    return Path(target)


_LATIN1_FOR_ESCAPES = {0xDC80 + i: 0x80 + i for i in range(128)}
