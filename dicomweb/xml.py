"""The Native DICOM Model (PS3.19 A.1) as XML, rendered from a DICOM JSON object.

One function, :func:`to_native_xml`, used wherever a response is asked for in
``application/dicom+xml`` (QIDO-RS matches, STOW-RS responses). The JSON object is the
archive's single model of an answer (PS3.18 Annex F); the XML says the same thing:

- ``DicomAttribute`` with ``tag``, ``vr`` and ``keyword`` (no keyword for private or unknown
  tags; ``privateCreator`` on private data elements whose creator is in the data set);
- ``Value number="n"`` per value, ``PersonName number="n"`` with ``Alphabetic`` /
  ``Ideographic`` / ``Phonetic`` groups split into their five components, ``Item number="n"``
  per sequence item, ``BulkData uri=...`` and ``InlineBinary``;
- an empty attribute is an element with no children.

Characters XML 1.0 cannot carry (C0 controls other than tab, CR and LF) become U+FFFD.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree as ET

from pydicom.datadict import keyword_for_tag

NATIVE_DICOM_MODEL = "NativeDicomModel"
NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _NOT_XML.sub("\ufffd", str(value))


def _private_creator(obj: dict[str, Any], tag: int) -> str | None:
    """The Private Creator of a private data element (PS3.5 7.8.1), if in the data set."""
    group, element = tag >> 16, tag & 0xFFFF
    if not group & 1 or element < 0x1000:
        return None
    item = obj.get(f"{group:04X}{element >> 8:04X}")
    values = item.get("Value") if isinstance(item, dict) else None
    return str(values[0]) if values else None


def _person_name(parent: ET.Element, number: int, value: Any) -> None:
    name = ET.SubElement(parent, "PersonName", number=str(number))
    if not isinstance(value, dict):
        return
    for group in PN_GROUPS:
        text = value.get(group)
        if not text:
            continue
        group_el = ET.SubElement(name, group)
        components = str(text).split("^")
        for component, part in zip(PN_COMPONENTS, components, strict=False):
            if part:
                ET.SubElement(group_el, component).text = _text(part)


def _attributes(parent: ET.Element, obj: dict[str, Any]) -> None:
    for key in sorted(obj):
        item = obj[key]
        tag = int(key, 16)
        vr = str(item.get("vr", "UN"))
        attrs = {"tag": key.upper(), "vr": vr}
        keyword = keyword_for_tag(tag) if not tag >> 16 & 1 else ""
        if keyword:
            attrs["keyword"] = keyword
        creator = _private_creator(obj, tag)
        if creator is not None:
            attrs["privateCreator"] = _text(creator)
        element = ET.SubElement(parent, "DicomAttribute", attrs)
        if "BulkDataURI" in item:
            ET.SubElement(element, "BulkData", uri=_text(item["BulkDataURI"]))
            continue
        if "InlineBinary" in item:
            ET.SubElement(element, "InlineBinary").text = _text(item["InlineBinary"])
            continue
        for number, value in enumerate(item.get("Value", ()), start=1):
            if vr == "SQ":
                child = ET.SubElement(element, "Item", number=str(number))
                if isinstance(value, dict):
                    _attributes(child, value)
            elif vr == "PN":
                _person_name(element, number, value)
            else:
                child = ET.SubElement(element, "Value", number=str(number))
                if value is not None:
                    child.text = _text(value)


def to_native_xml(obj: dict[str, Any]) -> bytes:
    """A DICOM JSON object as a UTF-8 Native DICOM Model XML document."""
    root = ET.Element(NATIVE_DICOM_MODEL, {"xmlns": NAMESPACE, "xml:space": "preserve"})
    _attributes(root, obj)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body
