"""The bundled sample: a synthetic Zooniverse classification export.

`write_export()` writes a CSV in the exact format of a current Panoptes
classification export (the 14 columns, quoting only where needed, `created_at`
as ``YYYY-MM-DD HH:MM:SS UTC``, `metadata` / `annotations` / `subject_data` as
JSON), so that the ingest, the SQL models and the model can be exercised without
real data. `generate_export_table()` returns the same rows as a pyarrow Table of
strings (what the CSV holds, with empty fields as nulls), for benchmarks.

The volunteers are simulated so that engagement is learnable the way it is in
real projects, and so that the demo teaches something:

Who comes, and how often
    * ~20% of volunteers are not logged in (`user_name` ``not-logged-in-<hex>``
      equal to their hashed `user_ip`, empty `user_id`); nearly all of them come
      once.
    * Activity is heavy tailed: about three quarters of volunteers have a
      single work session; the ones who return do so a lognormal number of
      times, so a few come back for weeks or months (until the export's end).
    * Each volunteer has a latent "stayer" trait z ~ N(0, 1). It raises both the
      chance of returning and the length of every session, so habits persist:
      some volunteers always stay long, some always leave fast. A model can learn
      it from a volunteer's history (earlier session lengths).

When they come
    * Each volunteer lives in a time zone (mostly the Americas and Europe, in
      summer time, some Asia/Oceania); `metadata.utc_offset` encodes it the way
      browsers do (JavaScript ``getTimezoneOffset() * 60``: seconds, sign
      reversed, so UTC-5 local is ``"18000"`` and UTC+2 is ``"-7200"``).
    * Sessions start at a local time of day drawn around a personal preferred
      hour; preferred hours cluster in the evening (with afternoon and morning
      modes and a little night owling).
    * Between sessions: long gaps. A return is the same day a few hours later,
      or 1, 2 or 3 days later at about the same local time (so gaps cluster near
      24, 48 and 72 hours), or after a week or more. Gaps are always >= 35
      minutes, longer than the largest label horizon.
    * New volunteers arrive all through the calendar, more at the launch, after
      two newsletters and at weekends. The calendar is fixed (2025-06-01 to
      2025-09-15 UTC) whatever today's date is; activity after its end is cut,
      as in a real export snapshot.

What a session looks like
    * Session length (classifications) is lognormal with a per-volunteer mean
      (the stayer trait), shorter on phones, late at night and for anonymous
      volunteers: heavy tailed (median ~10, a few sessions of several hundred,
      never much over 5 hours).
    * Task duration (``finished_at - started_at``) depends on the workflow (a
      yes/no question takes seconds, transcription a minute or more), on the
      volunteer's own speed, on the device (drawing on a phone is slow), on a
      warm-up (the first tasks of a volunteer's first session are slow), on
      experience, on a slowly wandering attention level (an AR(1) process, which
      also makes spurious slow-downs that do not end the session) and on noise.
    * Inside a session, between tasks, there are short pauses (a second or two
      to load the next subject), breaks of ~15 s to 5 min, and occasional 5-15
      minute breaks (some of which split the session under a 10-minute rule).
    * Fatigue: over the last stretch of a session (the last 8-25 minutes, a
      personal habit; 4 to 80 classifications and at most half the session) the
      volunteer slows down: task durations grow, pauses lengthen and breaks
      become more likely. The effect is a trend over several events, of the
      size of the per-event noise at its end and much smaller before, and it
      differs by person (about a fifth of volunteers just leave, with no
      warning). This is what a sequence model over the last K events can pick
      up better than tabular features of the last event; by design, whether a
      volunteer is still working 10, 20 or 30 minutes later stays only
      moderately predictable (ROC-AUC ~0.7-0.8 with simple features).
    * `created_at` is `finished_at` plus a short upload delay, truncated to the
      second. `classification_id` increases with `created_at`.

Everything is generated as numpy arrays (users, then sessions, then
classifications; no Python loop over volunteers or rows), deterministic for a
seed (numpy Generator), and turned into text by DuckDB in parallel: one SQL
definition of the columns gives both the Table and finished CSV lines, whose
bytes go straight to the file. Only the JSON columns need CSV quotes; the tests
check that the file is byte for byte what DuckDB's ``COPY ... TO`` (which quotes
only when needed) writes for the same Table. About 11 s and 0.95 GB per million
rows on 2 cores.

The files, in the order a row is made:
    vocabulary.py      the project's constant tables (calendar, workflows, devices, time zones, names)
    arrays.py          vectorized helpers over segments (sessions of a volunteer, tasks of a session)
    timing.py          steps every shape shares (hours, arrivals, task and pause times, placing sessions)
    shapes.py          the shapes of behaviour by name: default, traits, habits
    volunteers.py      the default shape: who comes, when, for how long, how they slow down
    traits.py          the traits shape: persistent traits, three causes of stopping
    habits.py          the habits shape: habitual counts, local-hour deadlines, weekly rhythm
    simulation.py      batches of volunteers to one sorted table of rows, with identities and answers
    identities.py      ids, names, hashed IPs, languages; browser sessions, user agents, viewports
    answers.py         each row's annotation, subject, version, gold standard, revision, id
    export_format.py   the 14 columns as SQL over that table (plain strings, or finished CSV lines)
    render.py          DuckDB renders the table or writes the CSV (gzip for .gz) atomically
    files.py           the public functions and defaults; command.py the `engagement generate` CLI
"""

from engagement_pipeline.sample.command import main
from engagement_pipeline.sample.export_format import EXPORT_COLUMNS
from engagement_pipeline.sample.files import (
    DEFAULT_CLASSIFICATIONS,
    DEFAULT_SEED,
    SAMPLE_FILE_NAME,
    ensure_sample_exports,
    generate_export_table,
    write_export,
)
from engagement_pipeline.sample.shapes import DEFAULT_SHAPE, SHAPES

__all__ = [
    "DEFAULT_CLASSIFICATIONS",
    "DEFAULT_SEED",
    "DEFAULT_SHAPE",
    "EXPORT_COLUMNS",
    "SAMPLE_FILE_NAME",
    "SHAPES",
    "ensure_sample_exports",
    "generate_export_table",
    "main",
    "write_export",
]
