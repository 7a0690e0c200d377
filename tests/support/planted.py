"""Generated objects that plant a distinct identifying value in every attribute of
PS3.15 Table E.1-1 (nested sequences included), for the leak and action-code tests."""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.support.factory import make_dataset, uid
from vna.deid.table import load_table

SKIP_GROUPS = (0x0000, 0x0002, 0xFFFA, 0xFFFC)
PLANTED_DATE = "19610203"


def planted_value(vr: str, n: int) -> object:
    """A value unique to row ``n`` that the leak checker recognises as identifying."""
    if vr == "PN":
        return f"Plantedname{n}^Given{n}"
    # one date for all rows: a shifted date can then never coincide with another source date
    if vr == "DA":
        return PLANTED_DATE
    if vr == "DT":
        return PLANTED_DATE + "101010"
    if vr == "TM":
        return "101010"
    if vr == "UI":
        return uid()
    if vr in ("SH", "AE", "CS"):
        return f"PLANT{n}"[:16]
    if vr in ("LO", "LT", "ST", "UT", "UC", "UR"):
        return f"Plantedtext{n} secret{n}"
    if vr == "AS":
        return "045Y"
    if vr in ("DS", "IS"):
        return str(n)
    if vr in ("US", "SS", "UL", "SL"):
        return n
    if vr in ("FL", "FD"):
        return float(n)
    if vr in ("OB", "OW", "UN"):
        return f"PLANTEDBYTES{n:04d}".encode()
    return None


def planted_item(n: int) -> Dataset:
    item = Dataset()
    item.PersonName = f"Seqperson{n}^Nested{n}"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = uid()
    item.TextValue = f"Seqtext{n} hidden{n}"
    item.Date = PLANTED_DATE
    return item


def planted_dataset() -> Dataset:
    """A CT object with every (non-repeating) Table E.1-1 attribute set."""
    ds = make_dataset(
        patient_name="Plantedpatient^Anna",
        patient_id="PLANTPID9",
        accession="ACC777",
        birth_date=PLANTED_DATE,
        study_date=PLANTED_DATE,
    )
    for n, row in enumerate(load_table()):
        tag = row.tag_int
        if tag is None or (tag >> 16) in SKIP_GROUPS or not row.vr:
            continue
        vr = row.vr.split(" or ")[0]
        if tag in ds:
            continue
        if vr == "SQ":
            ds.add(DataElement(tag, "SQ", Sequence([planted_item(n)])))
            continue
        value = planted_value(vr, n)
        if value is not None:
            ds.add(DataElement(tag, vr, value))
    ds.add_new(0x00090010, "LO", "PRIVATECREATOR")
    ds.add_new(0x00091001, "LO", "Privatevalue secret")
    return ds
