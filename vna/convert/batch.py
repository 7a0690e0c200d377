"""A batch of files to convert: the user's context (flags, manifest) and options, and the
numbering of each case's files.

The flags give the defaults; a manifest row names one file and overrides them. Files of one
case are numbered in the batch's order (Instance Number), DICOM files simply leave a gap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from vna.convert.common import Options
from vna.convert.context import Context, Manifest
from vna.errors import ConversionError


@dataclass(frozen=True)
class ConversionPlan:
    """How the non-DICOM files of a batch are converted (picklable for worker processes)."""

    defaults: Context = field(default_factory=Context)
    manifest: Manifest | None = None
    options: Options = field(default_factory=Options)
    #: The batch's start: the study date and time of cases that give none.
    started: dt.datetime = field(default_factory=dt.datetime.now)

    def context_for(self, path: Path) -> Context:
        """The context of one file: its manifest row over the defaults, with the batch's
        start as study date/time where none is given (checked later, per file)."""
        context = self.defaults
        if self.manifest is not None:
            row = self.manifest.row_for(path)
            context = context.merged(row) if row else context
        return replace(
            context,
            study_date=context.study_date or self.started.strftime("%Y%m%d"),
            study_time=context.study_time or self.started.strftime("%H%M%S"),
        )

    def numbered(self, files: Iterable[Path]) -> list[tuple[Path, int]]:
        """Each file with its Instance Number: 1, 2, 3… within its case."""
        counters: dict[tuple[str, ...], int] = {}
        out = []
        for path in files:
            context = self.context_for(path)
            try:
                key = context.checked().case_key()
            except ConversionError:
                key = ("unchecked",)
            counters[key] = counters.get(key, 0) + 1
            out.append((path, counters[key]))
        return out
