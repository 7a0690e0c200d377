"""Whole-slide images → VL Whole Slide Microscopy Image Storage (PS3.3 A.32.8) with
wsidicomizer.

Aperio SVS, Hamamatsu NDPI, Philips TIFF, 3DHistech TIFF and OME-TIFF are read by OpenTile,
whose tiles are copied without re-encoding; MIRAX and the other formats OpenSlide reads are
re-encoded tile by tile. The label, overview (macro) and thumbnail images are left out unless
the user includes them on purpose: labels and macro photos show the patient's name and the
laboratory's sample number. The source's own identifying metadata is dropped
(``include_confidential=False``) and the patient, study and series come from the context.
Tiles are streamed by wsidicomizer's workers, so memory stays bounded whatever the slide's
size; progress is estimated from the bytes written against the source's size.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import UID
from wsidicomizer import WsiDicomizer
from wsidicomizer.metadata import WsiDicomizerMetadata

from vna.convert.common import (
    SERIES_NUMBERS,
    Job,
    ProgressFn,
    derived_uid,
    series_uid,
    study_uid,
)
from vna.convert.context import Context
from vna.errors import ConversionError

# wsidicomizer makes pydicom strict for the whole process when imported (enforce_valid_values:
# reading raises on any irregularity; "future" behaviour: strict writing, no
# ``convert_pixel_data``). The rest of the archive reads tolerantly: restore the defaults.
pydicom_config.enforce_valid_values = False
pydicom_config.future_behavior(False)

VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
POLL_SECONDS = 0.5


def _metadata(context: Context, series: UID, slide_id: str) -> WsiDicomizerMetadata:
    """wsidicom's metadata model filled from the user's context only."""
    from wsidicom.metadata import Patient, PatientSex, Series, Slide, Study

    def date(text: str) -> dt.date | None:
        return dt.datetime.strptime(text, "%Y%m%d").date() if text else None

    time = None
    if context.study_time:
        digits = context.study_time.split(".")[0].ljust(6, "0")
        time = dt.time(int(digits[:2]), int(digits[2:4]), int(digits[4:6]))
    return WsiDicomizerMetadata(
        study=Study(
            uid=study_uid(context),
            identifier=context.accession or str(study_uid(context)).replace(".", "")[-16:],
            date=date(context.study_date),
            time=time,
            accession_number=context.accession or None,
            referring_physician_name=context.referring_physician or None,
            description=context.study_description or None,
        ),
        series=Series(
            uid=series,
            number=SERIES_NUMBERS["wsi"],
            description=context.series_description or None,
        ),
        patient=Patient(
            name=context.patient_name or None,
            identifier=context.patient_id,
            birth_date=date(context.birth_date),
            sex=PatientSex[context.sex] if context.sex else None,
        ),
        slide=Slide(identifier=slide_id),
    )


def _post_processor(context: Context) -> Callable[[Dataset, object], Dataset]:
    """Attributes wsidicom's model has no place for: issuer, character set, department; the
    content dates are the study's (not the scanner's, not the conversion's)."""

    def process(ds: Dataset, _metadata: object) -> Dataset:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ContentDate = context.study_date
        ds.ContentTime = context.study_time
        ds.AcquisitionDateTime = context.study_date + context.study_time
        if context.issuer:
            ds.IssuerOfPatientID = context.issuer
        if context.department:
            ds.InstitutionalDepartmentName = context.department
        if context.operator:
            ds.OperatorsName = context.operator
        return ds

    return process


@contextmanager
def _watch(folder: Path, total: int, progress: ProgressFn | None) -> Iterator[None]:
    """Report bytes written in ``folder`` against ``total`` every half second."""
    if progress is None:
        yield
        return
    done = threading.Event()

    def poll() -> None:
        while not done.wait(POLL_SECONDS):
            written = sum(p.stat().st_size for p in folder.glob("*") if p.is_file())
            progress(min(written, total), total)

    thread = threading.Thread(target=poll, name="wsi-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        progress(total, total)


def convert_slide(job: Job) -> list[Path]:
    """Convert one slide into its VL Whole Slide Microscopy instances (one per pyramid
    level, plus label/overview/thumbnail when included); return their paths.

    Raises:
        ConversionError: no reader supports the file, or it is corrupt.
    """
    context, options, digest = job.context, job.options, job.digest
    series = series_uid(context, f"wsi:{digest}", VL_WSI)
    counter = itertools.count(1)

    def uids() -> UID:
        return derived_uid("wsi", series, digest, str(next(counter)))

    number = job.instance_number
    slide_id = f"{context.accession}-{number}" if context.accession else f"S{digest[:12]}"
    work = job.out_dir / f".wsi-{digest[:16]}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with _watch(work, job.path.stat().st_size, job.progress):
            created = WsiDicomizer.convert(
                job.path,
                work,
                metadata=_metadata(context, series, slide_id),
                uid_generator=uids,
                include_label=options.include_label,
                include_overview=options.include_overview,
                include_thumbnail=options.include_thumbnail,
                include_confidential=False,
                metadata_post_processor=_post_processor(context),
                workers=options.wsi_workers,
            )
        results = []
        for name in created:
            target = job.out_dir / Path(name).name
            Path(name).replace(target)
            results.append(target)
    except NotImplementedError as exc:
        raise ConversionError(f"no slide reader supports this file: {exc}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise ConversionError(f"unreadable slide: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not results:
        raise ConversionError("the slide produced no image")
    left_out = [
        name
        for name, included in (
            ("label", options.include_label),
            ("overview", options.include_overview),
            ("thumbnail", options.include_thumbnail),
        )
        if not included
    ]
    if left_out:
        job.warnings.append(f"slide {', '.join(left_out)} image(s) left out")
    return sorted(results)
