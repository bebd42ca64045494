"""The records of an export, checked before DuckDB reads it: numpy over byte chunks, no loop over rows.

DuckDB's CSV reader (2.0.1) keeps a copy of the whole line for every error it
finds in a line, and its memory_limit does not bound them: one 82 KB line with
40,000 extra fields took 1.4 GB; a missing column or a field that is not UTF-8
costs the same, per field. So no malformed record reaches it. This pass finds,
quote-aware, every record that does not have the header's number of fields,
whose quoting is broken (a quote inside an unquoted field, text after a
closing quote, a quoted field never closed), that holds a carriage return
outside quotes, or that is over the line limit; the load reads a copy of the
file without them (`write_clean_copy`, never larger than the file) and rejects
each at its line with the reason found here. The copy also ends every record
with LF, so files whose lines end in LF and CRLF mixed load whole.

The grammar is RFC 4180 with DuckDB's reading of it: a quote opens a field
only at its start, `""` inside quotes is one quote, and after an error the
reader starts again at the next line. Each physical line is judged under both
possible states at its start (inside a quoted field or not); the states then
follow from a vectorized scan over the lines.
"""

from dataclasses import dataclass, field

import numpy as np

LF, CR, QUOTE, COMMA = 10, 13, 34, 44
CHUNK_BYTES = 1 << 22
# Codes of the problems found, in order of precedence (a record keeps the highest).
FIELDS, QUOTING, CARRIAGE_RETURN, UNCLOSED, TOO_LONG = 1, 2, 3, 4, 5
# More malformed records than this and the file is refused: it is not a CSV export in the expected shape.
MAX_MALFORMED_RECORDS = 1_000_000


class TooManyMalformedRecords(ValueError):
    pass


@dataclass
class FileStructure:
    lines: int = 0  # physical lines after the header
    records: int = 0  # data records (blank lines are none), malformed ones included
    blank_lines: int = 0
    crlf_ends: int = 0  # records ended by CRLF and by LF alone
    lf_ends: int = 0
    # One entry per malformed record: first physical line (1 = header), lines it spans,
    # byte offset, bytes (without its final newline), fields found, problem code.
    malformed: dict = field(default_factory=dict)

    @property
    def needs_copy(self) -> bool:
        """DuckDB cannot read the file as it is: a record must be left out, or line endings are mixed."""
        return bool(len(self.malformed["line"])) or (self.crlf_ends > 0 and self.lf_ends > 0)


COLUMNS = ("line", "lines", "offset", "length", "fields", "code")


class RecordScanner:
    """Fed the bytes after the header line in chunks; `finish()` returns the FileStructure.

    `keep` (for the second pass, `write_clean_copy`): sorted first lines and line counts of the records to
    leave out; `feed` then returns the bytes to write: every other line, with CR stripped before a
    record's final LF.
    """

    def __init__(self, header_fields: int, max_record_bytes: int, first_line: int, offset: int, keep=None):
        self.header_fields, self.limit = header_fields, max_record_bytes
        self.line, self.offset, self.state = first_line, offset, 0  # of the next line to judge
        self.pending = bytearray()
        self.long_line: list[int] | None = None  # [line, offset, bytes] of a line over the limit, being skipped
        self.open: list[int] | None = None  # [line, offset, commas, code, lines, bytes] of a record not ended
        self.result = FileStructure()
        self.parts: list[dict] = []
        self.count = 0
        self.drop = keep  # (first lines, line counts) of records to leave out, or None in the first pass

    # ----------------------------------------------------------------------------- feeding

    def feed(self, chunk: bytes) -> bytes:
        out = []
        if self.long_line is not None:
            end = chunk.find(b"\n")
            if end < 0:
                self.long_line[2] += len(chunk)
                return b""
            self.long_line[2] += end
            self._end_long_line()
            chunk = chunk[end + 1 :]
        self.pending += chunk
        last = self.pending.rfind(b"\n")
        if last >= 0:
            block = bytes(self.pending[: last + 1])
            del self.pending[: last + 1]
            out.append(self._block(block))
        if len(self.pending) > self.limit:  # a line over the limit: counted, not kept
            self.long_line = [self.line, self.offset, len(self.pending)]
            self.pending = bytearray()
        return b"".join(out)

    def finish(self) -> tuple[FileStructure, bytes]:
        out = b""
        if self.long_line is not None:
            self._end_long_line(newline=False)
        elif self.pending:  # a last line without its newline
            out = self._block(bytes(self.pending) + b"\n")
            self.pending = bytearray()
        if self.open is not None:  # the file ends inside a quoted field
            line, offset, commas, code, lines, size = self.open
            self._note([line], [lines], [offset], [size - 1], [commas + 1], [max(code, UNCLOSED)])
            self.open = None
        result = self.result
        result.malformed = {
            c: np.concatenate([np.asarray(part[c], dtype=np.int64) for part in self.parts] or [np.zeros(0, np.int64)])
            for c in COLUMNS
        }
        return result, out

    def _end_long_line(self, newline: bool = True) -> None:
        """A line over the limit ended: its record (the line, or the quoted record it continues) is malformed."""
        line, offset, size = self.long_line
        self.long_line = None
        if self.open is None:
            self.result.records += 1
            self.open = [line, offset, 0, 0, 0, 0]
        first, start, commas, _, lines, _ = self.open
        self.open = None
        self._note([first], [lines + 1], [start], [offset + size - start], [commas + 1], [TOO_LONG])
        self.result.lines += 1
        self.line, self.offset, self.state = line + 1, offset + size + newline, 0

    def _note(self, line, lines, offset, size, fields, code) -> None:
        """Malformed records (arrays of their first line, lines, offset, bytes, fields, problem)."""
        self.parts.append(dict(zip(COLUMNS, (line, lines, offset, size, fields, code), strict=True)))
        self.count += len(line)
        if self.count > MAX_MALFORMED_RECORDS:
            raise TooManyMalformedRecords(
                f"over {MAX_MALFORMED_RECORDS:,} malformed records (fields that do not match the header's "
                f"{self.header_fields}, broken quoting): not a CSV export of the expected shape"
            )

    # ----------------------------------------------------------------------------- one block of whole lines

    def _block(self, block: bytes) -> bytes:
        d = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(d == LF)
        k = len(ends)
        starts = np.empty(k, dtype=np.int64)
        starts[0], starts[1:] = 0, ends[:-1] + 1
        lengths = ends - starts
        crlf = (lengths > 0) & (d[np.maximum(ends - 1, 0)] == CR)

        quotes = np.flatnonzero(d == QUOTE)
        q_line = np.searchsorted(ends, quotes)  # the line of each quote
        q_count = np.bincount(q_line, minlength=k)
        q_before_line = np.cumsum(q_count) - q_count
        rank = np.arange(len(quotes)) - q_before_line[q_line]  # quotes before it on its line
        before = np.where(quotes > 0, d[np.maximum(quotes - 1, 0)], LF)
        after = d[quotes + 1]  # every line ends with LF, never with a quote
        after2 = d[np.minimum(quotes + 2, len(d) - 1)]
        opens_ok = (before == COMMA) | (before == LF) | (before == QUOTE)
        closes_ok = (after == QUOTE) | (after == COMMA) | (after == LF) | ((after == CR) & (after2 == LF))

        commas = np.flatnonzero(d == COMMA)
        c_line = np.searchsorted(ends, commas)
        c_rank = np.searchsorted(quotes, commas) - q_before_line[c_line]
        returns = np.flatnonzero(d == CR)
        r_line = np.searchsorted(ends, returns)
        r_rank = np.searchsorted(quotes, returns) - q_before_line[r_line]
        lone = d[returns + 1] != LF

        bad, n_commas = [], []
        for s in (0, 1):  # the state at the line's start: outside or inside a quoted field
            quote_bad = np.where(((s + rank) & 1) == 0, ~opens_ok, ~closes_ok)
            quoting = np.bincount(q_line[quote_bad], minlength=k) > 0
            returning = np.bincount(r_line[lone & (((s + r_rank) & 1) == 0)], minlength=k) > 0
            bad.append(np.where(returning, CARRIAGE_RETURN, np.where(quoting, QUOTING, 0)))
            n_commas.append(np.bincount(c_line[((s + c_rank) & 1) == 0], minlength=k))

        # Each line maps the state at its start to the state at its end: a line with an error ends
        # outside quotes (the reader starts again at the next line). Only three maps occur:
        # identity, negation, constant 0; the states follow from where the last constant stands.
        odd = (q_count & 1).astype(bool)
        f0 = np.where(bad[0] > 0, 0, odd.astype(np.int64))
        f1 = np.where(bad[1] > 0, 0, (~odd).astype(np.int64))
        is_const = (f0 == 0) & (f1 == 0)
        is_not = (f0 == 1) & (f1 == 0)
        index = np.arange(k)
        last_const = np.maximum.accumulate(np.where(is_const, index, -1))
        nots = np.cumsum(is_not)
        state_out = np.where(
            last_const >= 0, (nots - nots[np.maximum(last_const, 0)]) & 1, (self.state + nots) & 1
        ).astype(np.int64)
        state_in = np.empty(k, dtype=np.int64)
        state_in[0], state_in[1:] = self.state, state_out[:-1]
        code = np.where(state_in == 0, bad[0], bad[1])
        line_commas = np.where(state_in == 0, n_commas[0], n_commas[1])
        blank = (state_in == 0) & ((lengths == 0) | ((lengths == 1) & crlf))

        out = b""
        if self.drop is not None:
            out = self._rewrite(d, starts, ends, crlf, state_out, k)
        self._records(starts, lengths, crlf, state_in, state_out, code, line_commas, blank)
        self.line += k
        self.offset += len(block)
        self.state = int(state_out[-1])
        self.result.lines += k
        return out

    def _records(self, starts, lengths, crlf, state_in, state_out, code, line_commas, blank) -> None:
        """Group the block's lines into records; the malformed ones are noted, one left open is carried."""
        result = self.result
        begins = (state_in == 0) & ~blank
        group = np.cumsum(begins)  # 0: lines that continue the record carried from the block before
        member = np.flatnonzero(~blank)
        n = int(group[-1]) + 1
        g = group[member]
        g_commas = np.bincount(g, weights=line_commas[member], minlength=n).astype(np.int64)
        g_lines = np.bincount(g, minlength=n)
        g_total = np.bincount(g, weights=(lengths + 1)[member], minlength=n).astype(np.int64)  # newlines included
        g_code = np.zeros(n, dtype=np.int64)
        np.maximum.at(g_code, g, code[member])
        last_line = np.zeros(n, dtype=np.int64)
        np.maximum.at(last_line, g, member)
        first = np.flatnonzero(begins)
        g_line = np.zeros(n, dtype=np.int64)
        g_offset = np.zeros(n, dtype=np.int64)
        g_line[1:], g_offset[1:] = self.line + first, self.offset + starts[first]
        if self.open is not None:  # group 0 continues it
            g_line[0], g_offset[0] = self.open[0], self.open[1]
            g_commas[0] += self.open[2]
            g_code[0] = max(int(g_code[0]), self.open[3])
            g_lines[0] += self.open[4]
            g_total[0] += self.open[5]
        exists = g_lines > 0
        exists[0] = self.open is not None
        ends_open = exists & (state_out[last_line] == 1)
        closed = exists & ~ends_open
        length = g_total - 1  # without the final newline
        g_code = np.where(length > self.limit, np.maximum(g_code, TOO_LONG), g_code)
        g_code = np.where(closed & (g_code == 0) & (g_commas + 1 != self.header_fields), FIELDS, g_code)
        good = closed & (g_code == 0)
        result.crlf_ends += int(np.count_nonzero(good & crlf[last_line]))
        result.lf_ends += int(np.count_nonzero(good & ~crlf[last_line]))
        result.records += len(first)
        result.blank_lines += int(np.count_nonzero(blank))
        bad = np.flatnonzero(closed & (g_code > 0))
        if len(bad):
            self._note(g_line[bad], g_lines[bad], g_offset[bad], length[bad], g_commas[bad] + 1, g_code[bad])
        self.open = None
        if ends_open[-1]:
            last = n - 1
            self.open = [int(g_line[last]), int(g_offset[last]), int(g_commas[last]), int(g_code[last])]
            self.open += [int(g_lines[last]), int(g_total[last])]

    def _rewrite(self, d, starts, ends, crlf, state_out, k) -> bytes:
        """The block without the lines of malformed records, each record's CRLF made LF."""
        numbers = self.line + np.arange(k)
        first_lines, line_counts = self.drop
        at = np.searchsorted(first_lines, numbers, side="right") - 1
        dropped = np.zeros(k, dtype=bool)
        if len(first_lines):
            within = np.maximum(at, 0)
            dropped = (at >= 0) & (numbers < first_lines[within] + line_counts[within])
        keep = np.repeat(~dropped, ends - starts + 1)
        keep[ends[crlf & (state_out == 0)] - 1] = False  # the CR of a record's CRLF
        return d[keep].tobytes()


# --------------------------------------------------------------------------- files


def _after_header(handle) -> tuple[int, bytes]:
    """Read past the header line: its size with its newline, and the bytes read after it."""
    seen = 0
    while True:
        chunk = handle.read(CHUNK_BYTES)
        if not chunk:
            return seen, b""
        end = chunk.find(b"\n")
        if end >= 0:
            return seen + end + 1, chunk[end + 1 :]
        seen += len(chunk)


def scan_structure(path, header_fields: int, max_record_bytes: int, open_binary) -> FileStructure:
    """One streaming pass over a UTF-8 export: its records, and the malformed ones."""
    with open_binary(path) as handle:
        header_bytes, rest = _after_header(handle)
        scanner = RecordScanner(header_fields, max_record_bytes, first_line=2, offset=header_bytes)
        scanner.feed(rest)
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            scanner.feed(chunk)
    structure, _ = scanner.finish()
    return structure


def write_clean_copy(path, target, structure: FileStructure, header_fields: int, max_record_bytes: int, open_binary):
    """`path` without its malformed records, each record ending in LF, into `target` (may be `path` itself,
    when it is a copy of ours: written in place, behind what is read, then cut to its new size)."""
    malformed = structure.malformed
    keep = (malformed["line"], malformed["lines"])
    in_place = str(path) == str(target)
    with open_binary(path) as source, open(target, "r+b" if in_place else "wb") as out:
        header_bytes, rest = _after_header(source)
        source_header = _read_at(open_binary, path, 0, header_bytes)
        out.write(source_header.rstrip(b"\r\n") + b"\n")
        scanner = RecordScanner(header_fields, max_record_bytes, first_line=2, offset=header_bytes, keep=keep)
        out.write(scanner.feed(rest))
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            out.write(scanner.feed(chunk))
        out.write(scanner.finish()[1])
        out.truncate()


def _read_at(open_binary, path, offset: int, size: int) -> bytes:
    with open_binary(path) as handle:
        handle.seek(offset)
        return handle.read(size)


def read_records(path, offsets, lengths, open_binary) -> list[bytes]:
    """The bytes at each (sorted) offset: the raw text of a few malformed records, read before any copy."""
    texts = []
    with open_binary(path) as handle:
        for offset, length in zip(offsets, lengths, strict=True):
            handle.seek(int(offset))  # forward only: a gzip stream reads its way there
            texts.append(handle.read(int(length)))
    return texts
