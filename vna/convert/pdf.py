"""PDF documents → Encapsulated PDF Storage (PS3.3 A.45.1).

The PDF is rewritten with qpdf (pikepdf): the document information dictionary (author,
creator, producer, dates) and every XMP metadata stream are removed unless the user keeps
them on purpose, with the applications' private data (``/PieceInfo``). A rewrite writes only
the objects the document still references, so older revisions of the metadata left behind
by incremental updates go too; the file identifier is recomputed from the content.
Encrypted documents are refused: the archive could not show them, nor check them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pikepdf
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from vna.convert.common import Job, output_path, write_part10
from vna.convert.context import Context
from vna.errors import ConversionError

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
PRIVATE_KEYS = ("/Metadata", "/PieceInfo")


def clean_pdf(source: Path, target: Path, keep_metadata: bool = False) -> int:
    """Write the PDF without its metadata to ``target``; return its number of pages.

    Raises:
        ConversionError: encrypted, corrupt, or without a page.
    """
    try:
        pdf = pikepdf.open(source)
    except pikepdf.PasswordError as exc:
        raise ConversionError("encrypted PDF: it needs a password to be opened") from exc
    except pikepdf.PdfError as exc:
        raise ConversionError(f"corrupt PDF: {exc}") from exc
    with pdf:
        if pdf.is_encrypted:
            raise ConversionError(
                "encrypted PDF: it carries a password or restrictions; save a copy without "
                "encryption first"
            )
        pages = len(pdf.pages)
        if pages == 0:
            raise ConversionError("the PDF has no page")
        if not keep_metadata:
            if "/Info" in pdf.trailer:
                del pdf.trailer["/Info"]
            for obj in pdf.objects:
                if isinstance(obj, pikepdf.Dictionary | pikepdf.Stream):
                    for key in PRIVATE_KEYS:
                        if key in obj:
                            del obj[key]
        pdf.save(target, deterministic_id=True, fix_metadata_version=False)
    return pages


def convert_pdf(job: Job) -> list[Path]:
    """Convert one PDF into one Encapsulated PDF object.

    Raises:
        ConversionError: encrypted, corrupt, or too large for one attribute (4 GiB).
    """
    keep = job.options.keep_pdf_metadata
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean.pdf"
        clean_pdf(job.path, clean, keep)
        document = clean.read_bytes()
    if keep:
        job.warnings.append("the PDF's document information and XMP metadata were kept on request")
    ds = job.dataset("pdf", ENCAPSULATED_PDF, EXPLICIT_VR_LE, str(keep))
    _document_modules(ds, job.context, document)
    return [write_part10(ds, output_path(job.out_dir, ds))]


def _document_modules(ds: Dataset, context: Context, document: bytes) -> None:
    """SC Equipment (C.8.6.1) and Encapsulated Document (C.24.2) modules."""
    ds.ConversionType = "SD" if context.device_type == "scanner" else "WSD"
    ds.ContentDate = context.study_date
    ds.ContentTime = context.study_time
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"  # a document shows whatever it shows
    ds.DocumentTitle = context.document_title
    ds.ConceptNameCodeSequence = DicomSequence()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(document)
    # PS3.3 C.24.2.1: an odd length is padded with one NUL byte (the length above is exact).
    ds.EncapsulatedDocument = document + (b"\x00" if len(document) % 2 else b"")
