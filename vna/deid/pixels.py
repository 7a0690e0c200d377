"""Burned-in annotation policy (PS3.15 E.3.1 Clean Pixel Data): refuse, or blank regions.

An object carries text in its pixels when it says so (BurnedInAnnotation YES) or when its kind
is known to (ultrasound, secondary capture, endoscopy/photo screen grabs) unless it says NO
explicitly with a kind that may be trusted. The policy ``reject`` refuses such objects;
``clean`` blanks the regions configured for the device in the ``[deid_pixel_regions]`` table
of the settings file (key ``Manufacturer/Model``, ``Manufacturer`` or ``*``; each region
``x,y,width,height`` in pixels, or ``all``) with deid's pixel cleaner, and refuses the object
when no region is configured for it. Whole-slide LABEL and OVERVIEW images show the slide label
and are always refused (USERS.md 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from deid.dicom.pixels.clean import clean_pixel_data
from pydicom.dataset import Dataset, FileDataset
from pydicom.uid import ExplicitVRLittleEndian

from vna.errors import InvalidObject

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: SOP classes whose pixels routinely carry text (PS3.15 E.3.1 note: US, SC, photos).
TEXT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.6.1",  # US Image
        "1.2.840.10008.5.1.4.1.1.3.1",  # US Multi-frame Image
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.77.1.1",  # VL Endoscopic
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic
    }
)
TEXT_MODALITIES = frozenset({"US", "OT", "SC", "ES", "XC", "GM"})


class BurnedInRejected(InvalidObject):
    """The object may show identity in its pixels and the policy refuses it."""


class LabelImageRejected(InvalidObject):
    """A whole-slide label or overview image: it shows the slide label."""


@dataclass(frozen=True)
class PixelDecision:
    """What the policy decided for one object, recorded in the object and the audit."""

    action: str  # "none", "cleaned"
    reason: str
    regions: tuple[str, ...] = ()


def may_carry_text(ds: Dataset) -> tuple[bool, str]:
    """Whether the pixels may show text, and why."""
    flag = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if flag == "YES":
        return True, "BurnedInAnnotation is YES"
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", "")).strip().upper()
    if sop_class in TEXT_SOP_CLASSES or modality in TEXT_MODALITIES:
        return True, f"{modality or sop_class} objects often carry burned-in text"
    return False, "no burned-in annotation expected"


def device_key(ds: Dataset) -> tuple[str, ...]:
    """Region keys for this object's device, most specific first."""
    manufacturer = str(ds.get("Manufacturer", "") or "").strip()
    model = str(ds.get("ManufacturerModelName", "") or "").strip()
    return (f"{manufacturer}/{model}", manufacturer, "*")


def apply_policy(ds: Dataset, policy: str, regions: Mapping[str, Any]) -> PixelDecision:
    """Refuse or clean ``ds`` in place according to the policy.

    Raises:
        LabelImageRejected: a whole-slide label or overview image.
        BurnedInRejected: text may be burned in and the policy (or a missing region) refuses.
    """
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS and (
        "LABEL" in image_type or "OVERVIEW" in image_type
    ):
        raise LabelImageRejected("whole-slide label and overview images are dropped")
    carries, why = may_carry_text(ds)
    if not carries or "PixelData" not in ds:
        return PixelDecision("none", why)
    if policy != "clean":
        raise BurnedInRejected(f"refused: {why} (burned-in annotation policy: {policy})")
    boxes: list[str] = []
    for key in device_key(ds):
        if key in regions:
            raw = regions[key]
            boxes = [str(b) for b in (raw if isinstance(raw, list) else [raw])]
            break
    if not boxes:
        raise BurnedInRejected(f"refused: {why} and no region is configured for this device")
    clean_regions(ds, boxes)
    return PixelDecision("cleaned", why, tuple(boxes))


def _corners(box: str) -> str:
    """``x,y,width,height`` -> deid's ``xmin,ymin,xmax,ymax`` (``all`` passes through)."""
    if box.strip().lower() == "all":
        return "all"
    x, y, w, h = (int(v) for v in box.split(","))
    return f"{x},{y},{x + w},{y + h}"


def clean_regions(ds: Dataset, boxes: list[str]) -> None:
    """Blank the boxes in every frame with deid's cleaner; the pixels are stored uncompressed
    afterwards (Explicit VR Little Endian) since they changed."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    original = ds.pixel_array
    results = {"flagged": True, "results": [{"coordinates": [[0, _corners(b)] for b in boxes]}]}
    view = ds if isinstance(ds, FileDataset) else FileDataset("", ds, file_meta=ds.file_meta)
    cleaned = clean_pixel_data(dicom_file=view, results=results)
    cleaned = np.asarray(cleaned).astype(original.dtype, copy=False).reshape(original.shape)
    ds.PixelData = cleaned.astype(cleaned.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "LossyImageCompression" not in ds and ds.get("LossyImageCompressionRatio"):
        ds.LossyImageCompression = "01"
    ds.BurnedInAnnotation = "NO"
