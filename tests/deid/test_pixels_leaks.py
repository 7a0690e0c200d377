"""Burned-in annotation policy and the leak checker."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import SecondaryCaptureImageStorage

from tests.support.factory import make_dataset, uid
from vna.deid import leaks, pixels

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def test_objects_that_may_carry_text_are_refused_under_reject() -> None:
    ds = make_dataset(sop_class=US_IMAGE, modality="US")
    with pytest.raises(pixels.BurnedInRejected):
        pixels.apply_policy(ds, "reject", {})
    flagged = make_dataset()
    flagged.BurnedInAnnotation = "YES"
    with pytest.raises(pixels.BurnedInRejected):
        pixels.apply_policy(flagged, "reject", {})
    assert pixels.apply_policy(make_dataset(), "reject", {}).action == "none"


def test_clean_blanks_the_configured_region_of_the_device() -> None:
    ds = make_dataset(sop_class=SecondaryCaptureImageStorage, modality="OT", rows=32, columns=32)
    ds.Manufacturer, ds.ManufacturerModelName = "Acme", "Echo 3"
    before = ds.pixel_array.copy()
    decision = pixels.apply_policy(ds, "clean", {"Acme/Echo 3": ["0,0,32,8"], "*": ["all"]})
    after = ds.pixel_array
    assert decision.action == "cleaned" and decision.regions == ("0,0,32,8",)
    assert (after[:8] == 0).all() and np.array_equal(after[8:], before[8:])
    assert ds.BurnedInAnnotation == "NO"


def test_clean_without_a_region_for_the_device_refuses() -> None:
    ds = make_dataset(sop_class=US_IMAGE, modality="US")
    with pytest.raises(pixels.BurnedInRejected, match="no region"):
        pixels.apply_policy(ds, "clean", {"Other/Model": ["0,0,1,1"]})


def test_whole_slide_label_and_overview_images_are_dropped() -> None:
    ds = make_dataset(sop_class=pixels.WSI_SOP_CLASS, modality="SM")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LABEL", "NONE"]
    with pytest.raises(pixels.LabelImageRejected):
        pixels.apply_policy(ds, "clean", {"*": ["all"]})


def _source() -> Dataset:
    ds = make_dataset(patient_name="Quuxley^Marta", patient_id="MRN4242", study_date="20230405")
    item = Dataset()
    item.PersonName = "Nestedname^Hidden"
    ds.ContentSequence = Sequence([item])
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", "Privatenote")
    return ds


@pytest.mark.parametrize(
    ("where", "value", "kind"),
    [
        ("ImageComments", "seen MRN4242 today", "id"),
        ("ImageComments", "patient quuxley", "name"),
        ("DerivationDescription", "made 05.04.2023", "date"),
        ("ImageComments", "hidden", "name"),
        ("ImageComments", "Privatenote", "private"),
    ],
)
def test_checker_finds_identity_left_anywhere(where: str, value: str, kind: str) -> None:
    source = _source()
    out = make_dataset(patient_name="", patient_id="", study_date="19000101")
    nested = Dataset()
    setattr(nested, where, value)
    out.ReferencedImageSequence = Sequence([nested])
    found = leaks.check([("s", source)], [("o", out)])
    assert kind in {leak.identifier.kind for leak in found}


def test_checker_finds_uids_and_text_inside_pixel_fragments() -> None:
    source = _source()
    out = make_dataset(patient_name="", patient_id="", study_date="19000101")
    out.PixelData = b"\xff\xd8\xff\xfe\x00\x10MRN4242 comment" + bytes(out.PixelData)[24:]
    out.ReferencedSOPInstanceUID = source.StudyInstanceUID
    kinds = {
        (leak.identifier.kind, leak.found_in) for leak in leaks.check([("s", source)], [("o", out)])
    }
    assert ("id", "PixelData bytes") in kinds
    assert any(kind == "uid" for kind, _ in kinds)


def test_checker_is_quiet_on_a_clean_copy() -> None:
    source = _source()
    out = make_dataset(
        patient_name="",
        patient_id="",
        study_date="19000101",
        study_uid=uid(),
        accession="",
        birth_date="",
    )
    out.ReferringPhysicianName = ""
    out.StudyDescription = "CT chest"
    assert leaks.check([("s", source)], [("o", out)]) == []
